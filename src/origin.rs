//! Origin binding (R13): attach the token only to requests for the origins
//! the user allowed.

use http::Uri;

/// An origin: scheme, host and port (RFC 6454).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `https://host[:port]` (any path is ignored).
    pub(crate) fn parse(origin: &str) -> Option<Self> {
        let url = url::Url::parse(origin).ok()?;
        Some(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }

    /// The origin of `uri`, if it has a scheme, a host and a port (stated
    /// or the scheme's default).
    #[cfg(feature = "jose")]
    pub(crate) fn of(uri: &Uri) -> Option<Self> {
        let (scheme, host) = (uri.scheme_str()?, uri.host()?);
        let scheme = scheme.to_ascii_lowercase();
        let port = uri.port_u16().or(match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        })?;
        Some(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether `url` is of this origin.
    #[cfg(feature = "reqwest-middleware")]
    pub(crate) fn matches_url(&self, url: &url::Url) -> bool {
        url.scheme().eq_ignore_ascii_case(&self.scheme)
            && url
                .host_str()
                .is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
            && url.port_or_known_default() == Some(self.port)
    }

    /// Whether `uri` is of this origin (a URI without an authority is not).
    pub(crate) fn matches(&self, uri: &Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        let port = uri.port_u16().or(match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        });
        scheme.eq_ignore_ascii_case(&self.scheme)
            && host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .eq_ignore_ascii_case(self.host.trim_start_matches('[').trim_end_matches(']'))
            && port == Some(self.port)
    }
}

/// Whether a request for `uri` may carry the token. With no allow-list,
/// every request may. A URI without an authority (as a client bound to one
/// origin, such as tonic's `Channel`, receives) is sent to that client's own
/// origin and may carry it too.
#[inline]
pub(crate) fn allowed(origins: Option<&[Origin]>, uri: &Uri) -> bool {
    match origins {
        None => true,
        Some(origins) => allowed_by(origins, uri),
    }
}

/// [`allowed`] with an allow-list.
fn allowed_by(origins: &[Origin], uri: &Uri) -> bool {
    uri.authority().is_none() || origins.iter().any(|o| o.matches(uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let list = [
            Origin::parse("https://api.example.com").unwrap(),
            Origin::parse("http://127.0.0.1:8080/ignored/path").unwrap(),
        ];
        let ok = |u: &str| allowed(Some(&list), &u.parse().unwrap());
        assert!(ok("https://api.example.com/x"));
        assert!(ok("https://API.example.com:443/x"));
        assert!(ok("http://127.0.0.1:8080/"));
        assert!(ok("/relative/path"));
        assert!(!ok("http://api.example.com/x"));
        assert!(!ok("https://api.example.com:8443/x"));
        assert!(!ok("https://evil.example.com/x"));
        assert!(!ok("http://127.0.0.1:8081/"));
        assert!(allowed(None, &"https://anything/".parse().unwrap()));
        assert!(Origin::parse("not a url").is_none());
    }
}
