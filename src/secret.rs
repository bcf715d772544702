//! Secret types: client secrets, access tokens and refresh tokens.
//!
//! Each type wraps a [`secrecy::SecretString`], so the value is zeroized on
//! drop, and its `Debug` output prints the type name and `[redacted]`, never
//! the value. None of them implements `Display`. Read the value with
//! `secret()` only where it must go on the wire.
//!
//! # Example
//!
//! ```
//! use tower_token::{AccessToken, ClientSecret};
//!
//! let secret = ClientSecret::new("s3cr3t");
//! assert_eq!(format!("{secret:?}"), "ClientSecret([redacted])");
//! assert_eq!(secret.secret(), "s3cr3t");
//!
//! let token = AccessToken::new("eyJhbGciOi");
//! assert!(!format!("{token:?}").contains("eyJ"));
//! ```

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(SecretString::from(value.into()))
            }

            /// The secret value, for putting it on the wire. Never log it.
            pub fn secret(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self::new(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self::new(value)
            }
        }
    };
}

secret_type!(
    /// An OAuth 2.0 client secret (RFC 6749 §2.3.1).
    ClientSecret
);
secret_type!(
    /// An OAuth 2.0 access token (RFC 6749 §1.4).
    AccessToken
);
secret_type!(
    /// An OAuth 2.0 refresh token (RFC 6749 §1.5).
    RefreshToken
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        for shown in [
            format!("{:?}", ClientSecret::new("hunter2")),
            format!("{:?}", AccessToken::new("hunter2")),
            format!("{:?}", RefreshToken::new("hunter2")),
            format!("{:#?}", Some(RefreshToken::new("hunter2"))),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
    }
}
