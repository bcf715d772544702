//! Sealing stored tokens: ChaCha20-Poly1305 with a key the user supplies,
//! bound to the entry's store key; several keys accepted for opening, the
//! first one used for sealing (key rotation).

use super::Entry;
use crate::secret::{AccessToken, RefreshToken};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// The format byte in front of every sealed value.
const FORMAT: u8 = 1;
const NONCE_LEN: usize = 12;

/// The keys stored tokens are sealed with; see the
/// [module docs](crate::store). Each key is 32 bytes with an id of one
/// byte, written in front of what it sealed. The first key seals; every key
/// opens, so a key can be rotated in before the old one is removed. `Debug`
/// shows the ids only.
#[derive(Clone)]
pub struct StoreKeys {
    keys: Vec<(u8, [u8; 32])>,
}

impl fmt::Debug for StoreKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreKeys")
            .field(
                "ids",
                &self.keys.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A store key that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreKeyError {
    /// The key is not 32 bytes long.
    #[error("a store key must be 32 bytes, this one has {0}")]
    Length(usize),
    /// Two keys have the same id.
    #[error("two store keys have the id {0}")]
    DuplicateId(u8),
}

impl StoreKeys {
    /// The keys, with `key` (32 bytes, id `id`) sealing.
    pub fn new(id: u8, key: &[u8]) -> Result<Self, StoreKeyError> {
        Ok(Self {
            keys: vec![(id, to_key(key)?)],
        })
    }

    /// Adds a key that opens (but does not seal) values, e.g. the one being
    /// rotated out.
    pub fn also_open_with(mut self, id: u8, key: &[u8]) -> Result<Self, StoreKeyError> {
        if self.keys.iter().any(|(k, _)| *k == id) {
            return Err(StoreKeyError::DuplicateId(id));
        }
        self.keys.push((id, to_key(key)?));
        Ok(self)
    }
}

fn to_key(key: &[u8]) -> Result<[u8; 32], StoreKeyError> {
    key.try_into().map_err(|_| StoreKeyError::Length(key.len()))
}

/// What a sealed entry holds.
#[derive(Clone)]
pub(crate) struct Sealed {
    pub(crate) access_token: AccessToken,
    pub(crate) refresh_token: Option<RefreshToken>,
    /// Wall-clock expiry, in milliseconds since the Unix epoch.
    pub(crate) expires_at_ms: u64,
    pub(crate) issued_at_ms: u64,
}

/// Seals and opens entries with [`StoreKeys`].
#[derive(Clone)]
pub(crate) struct Sealer {
    keys: Vec<(u8, ChaCha20Poly1305, [u8; 32])>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    pub(crate) fn new(keys: &StoreKeys) -> Self {
        Self {
            keys: keys
                .keys
                .iter()
                .map(|(id, key)| (*id, ChaCha20Poly1305::new(Key::from_slice(key)), *key))
                .collect(),
        }
    }

    /// A keyed fingerprint of `token` (hex), made with the sealing key.
    pub(crate) fn fingerprint(&self, token: &AccessToken) -> String {
        let Some((_, _, key)) = self.keys.first() else {
            return String::new();
        };
        // HMAC accepts a key of any length: this cannot fail.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
            return String::new();
        };
        mac.update(b"tower-token fingerprint\0");
        mac.update(token.secret().as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Seals `token` for the store key `key`.
    pub(crate) fn seal(&self, key: &str, token: &Sealed) -> Option<Entry> {
        let (id, cipher, _) = self.keys.first()?;
        let plain = serde_json::json!({
            "a": token.access_token.secret(),
            "r": token.refresh_token.as_ref().map(RefreshToken::secret),
            "e": token.expires_at_ms,
            "i": token.issued_at_ms,
        })
        .to_string();
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain.as_bytes(),
                    aad: key.as_bytes(),
                },
            )
            .ok()?;
        let mut value = Vec::with_capacity(2 + NONCE_LEN + sealed.len());
        value.push(FORMAT);
        value.push(*id);
        value.extend_from_slice(&nonce);
        value.extend_from_slice(&sealed);
        Some(Entry {
            issued_at_ms: token.issued_at_ms,
            fingerprint: self.fingerprint(&token.access_token),
            value,
        })
    }

    /// Opens `entry` stored under `key`; `None` when it does not open (a
    /// key not held, a value tampered with or stored under another key).
    pub(crate) fn open(&self, key: &str, entry: &Entry) -> Option<Sealed> {
        let value = entry.value.as_slice();
        let (&format, rest) = value.split_first()?;
        let (&id, rest) = rest.split_first()?;
        if format != FORMAT || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let (_, cipher, _) = self.keys.iter().find(|(k, _, _)| *k == id)?;
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: key.as_bytes(),
                },
            )
            .ok()?;
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&plain).ok()?;
        Some(Sealed {
            access_token: AccessToken::new(object.get("a")?.as_str()?),
            refresh_token: match object.get("r") {
                Some(serde_json::Value::String(r)) => Some(RefreshToken::new(r.as_str())),
                _ => None,
            },
            expires_at_ms: object.get("e")?.as_u64()?,
            issued_at_ms: object.get("i")?.as_u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed() -> Sealed {
        Sealed {
            access_token: AccessToken::new("at-secret"),
            refresh_token: Some(RefreshToken::new("rt-secret")),
            expires_at_ms: 2_000,
            issued_at_ms: 1_000,
        }
    }

    #[test]
    fn sealing_round_trips_and_hides_the_token() {
        let sealer = Sealer::new(&StoreKeys::new(1, &[7; 32]).unwrap());
        let entry = sealer.seal("k", &sealed()).unwrap();
        let raw = String::from_utf8_lossy(&entry.value);
        assert!(!raw.contains("at-secret") && !raw.contains("rt-secret"));
        assert!(!entry.fingerprint.contains("at-secret"));
        let opened = sealer.open("k", &entry).unwrap();
        assert_eq!(opened.access_token.secret(), "at-secret");
        assert_eq!(opened.refresh_token.unwrap().secret(), "rt-secret");
        assert_eq!((opened.expires_at_ms, opened.issued_at_ms), (2_000, 1_000));
    }

    #[test]
    fn a_value_that_does_not_open_is_absent() {
        let keys = StoreKeys::new(1, &[7; 32]).unwrap();
        let sealer = Sealer::new(&keys);
        let entry = sealer.seal("k", &sealed()).unwrap();
        // Another store key: bound to its own.
        assert!(sealer.open("other", &entry).is_none());
        // Tampered.
        let mut tampered = entry.clone();
        let last = tampered.value.len() - 1;
        tampered.value[last] ^= 1;
        assert!(sealer.open("k", &tampered).is_none());
        // A key rotated out.
        let rotated = Sealer::new(&StoreKeys::new(2, &[9; 32]).unwrap());
        assert!(rotated.open("k", &entry).is_none());
        // Rotated in: the new key seals, the old one still opens.
        let both = Sealer::new(
            &StoreKeys::new(2, &[9; 32])
                .unwrap()
                .also_open_with(1, &[7; 32])
                .unwrap(),
        );
        assert!(both.open("k", &entry).is_some());
        let fresh = both.seal("k", &sealed()).unwrap();
        assert_eq!(fresh.value[1], 2);
        assert!(sealer.open("k", &fresh).is_none());
        // Garbage.
        for value in [vec![], vec![1], vec![1, 1, 0, 0], vec![9; 64]] {
            let e = Entry {
                value,
                ..entry.clone()
            };
            assert!(sealer.open("k", &e).is_none());
        }
        assert!(format!("{keys:?}").contains("ids"));
        assert_eq!(
            StoreKeys::new(1, &[0; 16]).unwrap_err(),
            StoreKeyError::Length(16)
        );
    }
}
