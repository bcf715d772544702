//! The DPoP nonces servers hand out (RFC 9449 §8, §9), remembered per origin:
//! the authorization server and each API have their own. Reads take no lock:
//! one `ArcSwap` load of a short list, and one of the origin's slot.

use crate::origin::Origin;
use arc_swap::{ArcSwap, ArcSwapOption};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use std::sync::Arc;

/// `DPoP-Nonce` (RFC 9449 §8.1).
pub(crate) const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// The longest nonce kept; a longer one is ignored.
const MAX_NONCE_LEN: usize = 1024;

/// The most origins remembered; past it, the oldest is forgotten.
const MAX_ORIGINS: usize = 64;

/// One origin's current nonce.
struct Slot {
    origin: Origin,
    nonce: ArcSwapOption<String>,
}

/// Nonces by origin.
#[derive(Default)]
pub(crate) struct Nonces {
    slots: ArcSwap<Vec<Arc<Slot>>>,
}

impl Nonces {
    /// Calls `f` with the nonce remembered for the origin of `uri`, if any.
    #[inline]
    pub(crate) fn with<R>(&self, uri: &Uri, f: impl FnOnce(Option<&str>) -> R) -> R {
        let slots = self.slots.load();
        if slots.is_empty() {
            return f(None);
        }
        match slots.iter().find(|s| s.origin.matches(uri)) {
            Some(slot) => {
                let nonce = slot.nonce.load();
                f(nonce.as_deref().map(String::as_str))
            }
            None => f(None),
        }
    }

    /// The nonce remembered for the origin of `uri`, if any.
    pub(crate) fn get(&self, uri: &Uri) -> Option<String> {
        self.with(uri, |n| n.map(str::to_owned))
    }

    /// Remembers the `DPoP-Nonce` of an answer from the origin of `uri`.
    /// Returns whether the answer had a usable one (RFC 9449 §8.1: one or
    /// more `NQCHAR`). A nonce equal to the remembered one changes nothing.
    pub(crate) fn remember(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(DPOP_NONCE) else {
            return false;
        };
        let Some(nonce) = parse(value) else {
            tracing::debug!("ignoring a DPoP-Nonce that is not a nonce");
            return false;
        };
        let Some(origin) = Origin::of(uri) else {
            return false;
        };
        let same = self.with(uri, |current| current == Some(nonce));
        if same {
            return true;
        }
        let nonce = Arc::new(nonce.to_owned());
        let slots = self.slots.load();
        if let Some(slot) = slots.iter().find(|s| s.origin == origin) {
            slot.nonce.store(Some(nonce));
            return true;
        }
        drop(slots);
        let slot = Arc::new(Slot {
            origin,
            nonce: ArcSwapOption::new(Some(nonce)),
        });
        self.slots.rcu(|slots| {
            let mut next: Vec<Arc<Slot>> = slots
                .iter()
                .filter(|s| s.origin != slot.origin)
                .cloned()
                .collect();
            if next.len() >= MAX_ORIGINS {
                next.remove(0);
            }
            next.push(Arc::clone(&slot));
            next
        });
        true
    }
}

/// A `DPoP-Nonce` value: 1 to 1024 `NQCHAR`s (`%x21 / %x23-5B / %x5D-7E`:
/// visible ASCII but `"` and `\`), so that it goes in a JSON string as it is.
pub(crate) fn parse(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    let nqchar = |b: &u8| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e);
    if bytes.is_empty() || bytes.len() > MAX_NONCE_LEN || !bytes.iter().all(nqchar) {
        return None;
    }
    value.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(nonce: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(DPOP_NONCE, HeaderValue::from_str(nonce).unwrap());
        headers
    }

    #[test]
    fn nonces_are_kept_per_origin() {
        let nonces = Nonces::default();
        let auth: Uri = "https://as.example/token".parse().unwrap();
        let api: Uri = "https://api.example/v1/orders?x=1".parse().unwrap();
        let other_port: Uri = "https://api.example:8443/v1".parse().unwrap();
        assert_eq!(nonces.get(&api), None);
        assert!(nonces.remember(&auth, &answer("as-1")));
        assert!(nonces.remember(&api, &answer("api-1")));
        assert_eq!(nonces.get(&auth).as_deref(), Some("as-1"));
        assert_eq!(
            nonces
                .get(&"https://API.example:443/else".parse().unwrap())
                .as_deref(),
            Some("api-1")
        );
        assert_eq!(nonces.get(&other_port), None);
        assert!(nonces.remember(&api, &answer("api-2")));
        assert_eq!(nonces.get(&api).as_deref(), Some("api-2"));
        assert_eq!(nonces.get(&auth).as_deref(), Some("as-1"));
        assert_eq!(nonces.slots.load().len(), 2);
    }

    #[test]
    fn only_nqchar_nonces_are_taken() {
        let nonces = Nonces::default();
        let api: Uri = "https://api.example/".parse().unwrap();
        for bad in ["", "a\"b", "a\\b", "a b", &"n".repeat(MAX_NONCE_LEN + 1)] {
            assert!(!nonces.remember(&api, &answer(bad)), "{bad:?}");
        }
        assert!(!nonces.remember(&api, &HeaderMap::new()));
        assert_eq!(nonces.get(&api), None);
        assert!(nonces.remember(&api, &answer("eyJ7S_zG.9lz-_~!#$")));
        assert!(!nonces.remember(&"/no/origin".parse().unwrap(), &answer("x")));
    }

    #[test]
    fn the_oldest_origin_goes_past_the_limit() {
        let nonces = Nonces::default();
        for port in 0..=MAX_ORIGINS as u16 {
            let uri: Uri = format!("https://h:{}/", 1000 + port).parse().unwrap();
            assert!(nonces.remember(&uri, &answer("n")));
        }
        assert_eq!(nonces.slots.load().len(), MAX_ORIGINS);
        assert_eq!(nonces.get(&"https://h:1000/".parse().unwrap()), None);
    }
}
