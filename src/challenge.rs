//! Reading a `WWW-Authenticate` header (RFC 9110 §11.6.1, RFC 6750 §3).
//!
//! Only what decides whether a 401 means "this token is no good":
//! the `error` parameter of the `Bearer` challenge, or of the `DPoP`
//! challenge (RFC 9449 §7.1), where `use_dpop_nonce` asks for a proof with
//! the nonce the answer carries rather than for a new token.
//!
//! # Example
//!
//! ```
//! use tower_token::challenge::bearer_error;
//!
//! let h = r#"Basic realm="x", Bearer realm="api", error="insufficient_scope", scope="a b""#;
//! assert_eq!(bearer_error(h).as_deref(), Some("insufficient_scope"));
//! assert_eq!(bearer_error("Bearer"), None);
//!
//! use tower_token::challenge::dpop_error;
//! let h = r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#;
//! assert_eq!(dpop_error(h).as_deref(), Some("use_dpop_nonce"));
//! assert_eq!(bearer_error(h), None);
//! ```

/// The `error` parameter of the first `Bearer` challenge in a
/// `WWW-Authenticate` value, if there is one. Never panics, whatever the
/// input.
pub fn bearer_error(header: &str) -> Option<String> {
    challenge_error(header, "bearer")
}

/// The `error` parameter of the first `DPoP` challenge in a
/// `WWW-Authenticate` value (RFC 9449 §7.1), if there is one. Never
/// panics, whatever the input.
pub fn dpop_error(header: &str) -> Option<String> {
    challenge_error(header, "dpop")
}

/// The `error` parameter of the first challenge of `scheme` (lower case).
fn challenge_error(header: &str, scheme: &str) -> Option<String> {
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    let mut in_scheme = false;
    loop {
        p.skip(b" \t,");
        let b = p.peek()?;
        let name = p.token();
        if name.is_empty() {
            // Not a token: a stray quote, `=` or other byte. Step over it.
            if b == b'"' {
                p.quoted();
            } else {
                p.i += 1;
            }
            continue;
        }
        p.skip(b" \t");
        if p.peek() == Some(b'=') {
            // `name = value`: a parameter of the current challenge (or the
            // `=` padding of a token68, whose value is empty).
            p.i += 1;
            p.skip(b" \t");
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token()
            };
            if in_scheme && name.eq_ignore_ascii_case("error") {
                return Some(value);
            }
        } else {
            // A challenge's scheme.
            in_scheme = name.eq_ignore_ascii_case(scheme);
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip(&mut self, set: &[u8]) {
        while self.peek().is_some_and(|b| set.contains(&b)) {
            self.i += 1;
        }
    }

    /// An RFC 9110 token (possibly empty).
    fn token(&mut self) -> String {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b))
        {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// A quoted string starting at the current `"`; an unterminated one ends
    /// at the end of the input.
    fn quoted(&mut self) -> String {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.i += 1;
                    }
                }
                other => out.push(other),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_bearer_error() {
        let cases = [
            (r#"Bearer error="invalid_token""#, Some("invalid_token")),
            (
                r#"Bearer realm="a", error=insufficient_scope"#,
                Some("insufficient_scope"),
            ),
            (
                r#"Basic realm="b", error="nope", Bearer error="invalid_token""#,
                Some("invalid_token"),
            ),
            (r#"Bearer realm="a \"q\", error=x""#, None),
            ("Bearer", None),
            ("Basic abc==, Bearer error=\"e\"", Some("e")),
            ("", None),
            ("===,,,\"", None),
            ("bearer ERROR=\"x\"", Some("x")),
        ];
        for (header, expected) in cases {
            assert_eq!(bearer_error(header).as_deref(), expected, "{header}");
        }
    }

    #[test]
    fn finds_the_dpop_error_apart_from_the_bearer_one() {
        let cases = [
            (
                r#"DPoP error="use_dpop_nonce", error_description="nonce please""#,
                Some("use_dpop_nonce"),
                None,
            ),
            (
                r#"Bearer error="invalid_token", DPoP algs="ES256", error=use_dpop_nonce"#,
                Some("use_dpop_nonce"),
                Some("invalid_token"),
            ),
            (r#"DPoP algs="ES256 EdDSA""#, None, None),
            (r#"dpop ERROR="invalid_token""#, Some("invalid_token"), None),
            (r#"DPoPX error="x""#, None, None),
        ];
        for (header, dpop, bearer) in cases {
            assert_eq!(dpop_error(header).as_deref(), dpop, "{header}");
            assert_eq!(bearer_error(header).as_deref(), bearer, "{header}");
        }
    }
}
