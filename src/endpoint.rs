//! Endpoint URLs and the plain-http rule of R13.
//!
//! Token and revocation endpoints must use `https`, unless the host is
//! loopback (`localhost`, `127.0.0.0/8`, `[::1]`) or the user allowed plain
//! http explicitly.
//!
//! # Example
//!
//! ```
//! use tower_token::endpoint::endpoint_url;
//!
//! assert!(endpoint_url("https://auth.example.com/oauth/token", false).is_ok());
//! assert!(endpoint_url("http://127.0.0.1:8080/token", false).is_ok());
//! assert!(endpoint_url("http://auth.example.com/token", false).is_err());
//! assert!(endpoint_url("http://auth.example.com/token", true).is_ok());
//! ```

use crate::error::ConfigError;
use url::{Host, Url};

/// Parses an endpoint URL and applies the plain-http rule.
pub fn endpoint_url(url: &str, allow_insecure_http: bool) -> Result<Url, ConfigError> {
    let parsed = Url::parse(url).map_err(|e| ConfigError::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    check_url(&parsed, allow_insecure_http)?;
    Ok(parsed)
}

/// Applies the plain-http rule to a parsed URL.
pub fn check_url(url: &Url, allow_insecure_http: bool) -> Result<(), ConfigError> {
    let host = match url.host() {
        Some(host) => host,
        None => {
            return Err(ConfigError::InvalidUrl {
                url: url.to_string(),
                reason: "no host".into(),
            });
        }
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(&host) => Ok(()),
        "http" => Err(ConfigError::InsecureUrl {
            host: host.to_string(),
        }),
        other => Err(ConfigError::InvalidUrl {
            url: url.to_string(),
            reason: format!("scheme `{other}` is not http or https"),
        }),
    }
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_rule() {
        for ok in [
            "https://a.example/t",
            "http://localhost:1/t",
            "http://127.0.0.2/t",
            "http://[::1]:8/t",
        ] {
            assert!(endpoint_url(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "http://a.example/t",
            "http://10.0.0.1/t",
            "ftp://a.example/t",
            "nope",
        ] {
            assert!(endpoint_url(bad, false).is_err(), "{bad}");
        }
        assert!(matches!(
            endpoint_url("http://a.example/t", false),
            Err(ConfigError::InsecureUrl { .. })
        ));
    }
}
