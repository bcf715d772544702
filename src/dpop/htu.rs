//! The `htu` claim: the request's target URI without query and fragment,
//! normalised as RFC 9449 §4.3 asks of the verifier (RFC 3986 §6.2.2
//! syntax-based and §6.2.3 scheme-based normalisation), so that the claim is
//! the form a verifier compares with.

use http::Uri;

/// Appends the `htu` of a request for `uri` to `out`: the scheme and host in
/// lower case, the port unless it is the scheme's default, and the path with
/// percent-encodings in upper case, unreserved characters decoded, dot
/// segments removed, and `/` for an empty path. No query, no fragment, no
/// user information. Returns `false` (and appends nothing) when `uri` has no
/// scheme or no host: an origin-form target alone cannot name the resource.
pub(crate) fn write_htu(uri: &Uri, out: &mut String) -> bool {
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return false;
    };
    if host.is_empty() {
        return false;
    }
    push_lower(out, scheme);
    out.push_str("://");
    push_lower(out, host);
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    if let Some(port) = uri.port_u16()
        && Some(port) != default_port
    {
        out.push(':');
        push_u16(out, port);
    }
    let path = uri.path();
    if path.is_empty() {
        out.push('/');
    } else if is_plain(path) {
        out.push_str(path);
    } else {
        push_normalised_path(out, path);
    }
    true
}

/// The `htu` of a request for `uri` as a new string; see [`write_htu`].
#[cfg(test)]
pub(crate) fn htu(uri: &Uri) -> Option<String> {
    let mut out = String::with_capacity(64);
    write_htu(uri, &mut out).then_some(out)
}

fn push_lower(out: &mut String, s: &str) {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        out.extend(s.chars().map(|c| c.to_ascii_lowercase()));
    } else {
        out.push_str(s);
    }
}

fn push_u16(out: &mut String, mut n: u16) {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

/// A path that normalisation leaves as it is: starts with `/`, no
/// percent-encoding, no `.` or `..` segment.
fn is_plain(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains('%')
        && !path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encoding normalised (§6.2.2.1, §6.2.2.2), then dot segments
/// removed (§6.2.2.3, §5.2.4).
fn push_normalised_path(out: &mut String, path: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        decoded.push('/');
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            let value = h << 4 | l;
            if is_unreserved(value) {
                decoded.push(char::from(value));
            } else {
                decoded.push('%');
                decoded.push(char::from(HEX[usize::from(h)]));
                decoded.push(char::from(HEX[usize::from(l)]));
            }
            i += 3;
            continue;
        }
        // A path of an `http::Uri` is ASCII; anything else is kept as it is.
        decoded.push(char::from(b));
        i += 1;
    }
    remove_dot_segments(out, &decoded);
}

/// RFC 3986 §5.2.4 for an absolute path.
fn remove_dot_segments(out: &mut String, path: &str) {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path.split('/').skip(1).peekable();
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "." => {
                if last {
                    segments.push("");
                }
            }
            ".." => {
                segments.pop();
                if last {
                    segments.push("");
                }
            }
            other => segments.push(other),
        }
    }
    if segments.is_empty() {
        out.push('/');
    }
    for segment in segments {
        out.push('/');
        out.push_str(segment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(uri: &str) -> Option<String> {
        htu(&uri.parse().unwrap())
    }

    #[test]
    fn the_query_goes_and_the_origin_is_normalised() {
        let cases = [
            (
                "https://api.example.com/a/b?x=1&y=2",
                "https://api.example.com/a/b",
            ),
            ("https://API.Example.COM:443/a", "https://api.example.com/a"),
            ("HTTP://example.com:80", "http://example.com/"),
            ("http://example.com:8080/", "http://example.com:8080/"),
            ("https://example.com:80/x", "https://example.com:80/x"),
            (
                "http://127.0.0.1:45321/api?q=%20",
                "http://127.0.0.1:45321/api",
            ),
            ("http://[::1]:8443/p", "http://[::1]:8443/p"),
            ("https://user:pw@example.com/p", "https://example.com/p"),
            ("https://example.com?only=query", "https://example.com/"),
        ];
        for (uri, want) in cases {
            assert_eq!(h(uri).as_deref(), Some(want), "{uri}");
        }
    }

    #[test]
    fn the_path_is_normalised_per_rfc_3986() {
        let cases = [
            ("https://e.com/a%2fb", "https://e.com/a%2Fb"),
            ("https://e.com/%7euser/%41%62", "https://e.com/~user/Ab"),
            ("https://e.com/a/./b/../c", "https://e.com/a/c"),
            ("https://e.com/a/b/..", "https://e.com/a/"),
            ("https://e.com/../../x", "https://e.com/x"),
            ("https://e.com/a/.", "https://e.com/a/"),
            ("https://e.com/a%zz", "https://e.com/a%zz"),
            ("https://e.com/a//b/", "https://e.com/a//b/"),
        ];
        for (uri, want) in cases {
            assert_eq!(h(uri).as_deref(), Some(want), "{uri}");
        }
    }

    #[test]
    fn an_origin_form_target_has_no_htu() {
        assert_eq!(h("/pkg.Service/Method"), None);
        assert_eq!(h("*"), None);
    }
}
