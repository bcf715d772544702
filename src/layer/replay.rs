//! Which request bodies can be sent again after a 401.
//!
//! A retry needs the same body bytes. Bodies whose bytes are known up front
//! are copied before the first attempt (a reference-count increment for
//! `Full<Bytes>` and `Bytes`); streams cannot be, and get the 401 back.
//!
//! Replayable: `http_body_util::Full<Bytes>`, `http_body_util::Empty<Bytes>`,
//! `Bytes`, `String`, `Vec<u8>`, and (feature `reqwest`) a `reqwest::Body`
//! built from bytes.

use bytes::Bytes;
use http_body_util::{Empty, Full};
use std::any::Any;

/// A copy of a request body, kept for one retry.
pub(crate) enum BodyCopy {
    Full(Full<Bytes>),
    Empty,
    Bytes(Bytes),
    String(String),
    Vec(Vec<u8>),
    #[cfg(feature = "reqwest")]
    Reqwest(Bytes),
}

impl BodyCopy {
    /// A copy of `body`, when its type is one that can be replayed.
    pub(crate) fn of<B: 'static>(body: &B) -> Option<Self> {
        let any = body as &dyn Any;
        if let Some(full) = any.downcast_ref::<Full<Bytes>>() {
            return Some(Self::Full(full.clone()));
        }
        if any.is::<Empty<Bytes>>() {
            return Some(Self::Empty);
        }
        if let Some(bytes) = any.downcast_ref::<Bytes>() {
            return Some(Self::Bytes(bytes.clone()));
        }
        if let Some(s) = any.downcast_ref::<String>() {
            return Some(Self::String(s.clone()));
        }
        if let Some(v) = any.downcast_ref::<Vec<u8>>() {
            return Some(Self::Vec(v.clone()));
        }
        #[cfg(feature = "reqwest")]
        if let Some(body) = any.downcast_ref::<reqwest::Body>() {
            return body
                .as_bytes()
                .map(|b| Self::Reqwest(Bytes::copy_from_slice(b)));
        }
        None
    }

    /// The body again, as the type it was copied from.
    pub(crate) fn rebuild<B: 'static>(&self) -> Option<B> {
        let mut slot: Option<B> = None;
        let any = &mut slot as &mut dyn Any;
        match self {
            Self::Full(full) => put(any, full.clone()),
            Self::Empty => put(any, Empty::<Bytes>::new()),
            Self::Bytes(bytes) => put(any, bytes.clone()),
            Self::String(s) => put(any, s.clone()),
            Self::Vec(v) => put(any, v.clone()),
            #[cfg(feature = "reqwest")]
            Self::Reqwest(bytes) => put(any, reqwest::Body::from(bytes.clone())),
        }
        slot
    }
}

fn put<T: 'static>(slot: &mut dyn Any, value: T) {
    if let Some(slot) = slot.downcast_mut::<Option<T>>() {
        *slot = Some(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bodies_round_trip() {
        let full = Full::new(Bytes::from_static(b"{\"a\":1}"));
        let copy = BodyCopy::of(&full).unwrap();
        let again: Full<Bytes> = copy.rebuild().unwrap();
        let _ = again;
        let copy = BodyCopy::of(&String::from("x")).unwrap();
        assert_eq!(copy.rebuild::<String>().as_deref(), Some("x"));
        assert!(BodyCopy::of(&Empty::<Bytes>::new()).is_some());
        // A type mismatch gives nothing rather than a wrong body.
        assert!(copy.rebuild::<Vec<u8>>().is_none());
        // Streams are not replayable.
        struct Stream;
        assert!(BodyCopy::of(&Stream).is_none());
    }
}
