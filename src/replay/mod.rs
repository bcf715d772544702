//! Which request bodies can be sent again after the token was rejected,
//! and how.
//!
//! When an answer says the token was rejected (401, or gRPC
//! `UNAUTHENTICATED`), the layer sends the request once more with a fresh
//! token — if it can send the same body again. A body type says how through
//! [`ReplayBody`]:
//!
//! - **Copied up front**, when its bytes are known before it is sent:
//!   `Full<Bytes>`, `Empty<Bytes>` and `Bytes` are copied by reference count
//!   (no byte is copied); `String`, `Vec<u8>` and a byte-backed
//!   `reqwest::Body` are copied once, and only when they fit the limit.
//! - **Recorded while sent**, for streams in a type-erased body that can
//!   hold any other body: `UnsyncBoxBody` and `BoxBody` of `Bytes`,
//!   `axum::body::Body` (feature `axum`), `tonic::body::Body` (feature
//!   `tonic`, so unary and streaming gRPC calls), and a streamed
//!   `reqwest::Body` (feature `reqwest`). The first attempt sends a
//!   [`Recording`] of the original body, which keeps each data frame by
//!   reference count and the trailers, up to the limit
//!   ([`TokenLayerBuilder::replay_limit`](crate::TokenLayerBuilder::replay_limit),
//!   default 64 KiB). When the answer is a rejection, the retry sends a
//!   [`Replayed`] body: the recorded frames, then the part of the original
//!   body that was not sent yet — a server may answer 401 before it reads
//!   the body, and the retry still carries the whole body, byte for byte.
//!   When the answer is anything else, the recording is released as soon as
//!   the response head arrives.
//! - **Never**: any other type that implements the trait with its default
//!   method. Such a request gets the 401 (or `UNAUTHENTICATED`) back, and the
//!   next request carries the fresh token.
//!
//! A body whose exact size is known to exceed the limit is not recorded; a
//! stream whose sent part outgrows the limit is no longer recorded and gets
//! the rejection back. Nothing truncated is ever sent: a body is replayed
//! whole, or not at all.
//!
//! Recording was chosen over reading the body up front: it adds no latency
//! and no buffering to requests that are not rejected (almost all), works
//! for streams that are produced while the answer arrives (gRPC
//! bidirectional calls), and costs one `Bytes` clone per frame, never a copy
//! of the bytes.
//!
//! # Your own body type
//!
//! Implement [`ReplayBody`]. The default method opts out; a type that is
//! cheap to copy returns [`Replay::copy`]; a type-erased body that can wrap
//! any `http_body::Body<Data = Bytes>` uses [`Replay::record`]:
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::combinators::UnsyncBoxBody;
//! use http_body_util::BodyExt;
//! use tower_token::replay::{Replay, ReplayBody};
//!
//! /// A body that is never sent again.
//! struct Upload(std::fs::File);
//! impl ReplayBody for Upload {}
//!
//! /// A type-erased body of one's own.
//! struct MyBody(UnsyncBoxBody<Bytes, std::io::Error>);
//!
//! impl MyBody {
//!     fn new<B>(body: B) -> Self
//!     where
//!         B: http_body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static,
//!     {
//!         MyBody(body.boxed_unsync())
//!     }
//! }
//!
//! impl ReplayBody for MyBody {
//!     fn replay(self, limit: usize) -> (Self, Replay<Self>) {
//!         // `MyBody::new` wraps the recording now, and the replay later.
//!         Replay::record(self.0, limit, MyBody::new, MyBody::new)
//!     }
//! }
//! # let _ = Upload;
//! ```

use bytes::Bytes;
use http_body::Body;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{Empty, Full};
use std::fmt;

mod record;

use record::Recorder;
pub use record::{Recording, Replayed};

/// A request body type that the layer may send again after a rejected
/// token; see the [module docs](self).
pub trait ReplayBody: Sized {
    /// Returns the body to send now, and what sends it again.
    ///
    /// `limit` is the most bytes to keep for a replay. The default sends the
    /// body as it is and never replays it.
    fn replay(self, _limit: usize) -> (Self, Replay<Self>) {
        (self, Replay::never())
    }
}

/// What the layer keeps of a request body to send it again; made by
/// [`ReplayBody::replay`].
pub struct Replay<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    Never,
    Copy(B),
    Recorded(Box<dyn Rebuild<B>>),
}

/// A recording and the function that turns its replay into `B`.
trait Rebuild<B>: Send + Sync {
    fn rebuild(self: Box<Self>) -> Option<B>;
}

struct Recorded<I, B> {
    recorder: Recorder<I>,
    wrap: fn(Replayed<I>) -> B,
}

impl<I: Send, B> Rebuild<B> for Recorded<I, B> {
    fn rebuild(self: Box<Self>) -> Option<B> {
        let Recorded { recorder, wrap } = *self;
        recorder.replay().map(wrap)
    }
}

impl<B> fmt::Debug for Replay<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Never => "Replay::Never",
            Kind::Copy(_) => "Replay::Copy",
            Kind::Recorded(_) => "Replay::Recorded",
        })
    }
}

impl<B> Replay<B> {
    /// The body cannot be sent again.
    pub fn never() -> Self {
        Self { kind: Kind::Never }
    }

    /// A copy of the body, made before it is sent.
    pub fn copy(body: B) -> Self {
        Self {
            kind: Kind::Copy(body),
        }
    }

    /// Records `inner` as it is sent, keeping at most `limit` bytes.
    ///
    /// Returns the body to send now, `wrap_recording(recording)`, and the
    /// replay, which sends `wrap_replay(replayed)`. Both wrappers are
    /// usually the body type's own constructor from any body (such as
    /// `axum::body::Body::new`). A body whose exact size is known to exceed
    /// `limit` is sent as it is, unrecorded.
    pub fn record<I>(
        inner: I,
        limit: usize,
        wrap_recording: impl FnOnce(Recording<I>) -> B,
        wrap_replay: fn(Replayed<I>) -> B,
    ) -> (B, Self)
    where
        I: Body<Data = Bytes> + Send + Unpin + 'static,
        B: 'static,
    {
        if inner.size_hint().lower() > limit as u64 {
            let (recording, recorder) = record::record(inner, 0);
            drop(recorder);
            return (wrap_recording(recording), Self::never());
        }
        let (recording, recorder) = record::record(inner, limit);
        (
            wrap_recording(recording),
            Self::recorded(recorder, wrap_replay),
        )
    }

    fn recorded<I>(recorder: Recorder<I>, wrap: fn(Replayed<I>) -> B) -> Self
    where
        I: Send + 'static,
        B: 'static,
    {
        Self {
            kind: Kind::Recorded(Box::new(Recorded { recorder, wrap })),
        }
    }

    /// Whether the body may be sent again.
    pub fn is_possible(&self) -> bool {
        !matches!(self.kind, Kind::Never)
    }

    /// The body to send again, if the whole of it can be sent.
    pub(crate) fn rebuild(self) -> Option<B> {
        match self.kind {
            Kind::Never => None,
            Kind::Copy(body) => Some(body),
            Kind::Recorded(recorded) => recorded.rebuild(),
        }
    }
}

// ---------------------------------------------------------------------------
// Bodies whose bytes are known up front: copied
// ---------------------------------------------------------------------------

impl ReplayBody for Full<Bytes> {
    fn replay(self, _limit: usize) -> (Self, Replay<Self>) {
        // A reference count: `Full<Bytes>` holds a `Bytes`.
        let copy = self.clone();
        (self, Replay::copy(copy))
    }
}

impl ReplayBody for Empty<Bytes> {
    fn replay(self, _limit: usize) -> (Self, Replay<Self>) {
        (self, Replay::copy(Empty::new()))
    }
}

impl ReplayBody for Bytes {
    fn replay(self, _limit: usize) -> (Self, Replay<Self>) {
        let copy = self.clone();
        (self, Replay::copy(copy))
    }
}

impl ReplayBody for String {
    fn replay(self, limit: usize) -> (Self, Replay<Self>) {
        if self.len() > limit {
            return (self, Replay::never());
        }
        let copy = self.clone();
        (self, Replay::copy(copy))
    }
}

impl ReplayBody for Vec<u8> {
    fn replay(self, limit: usize) -> (Self, Replay<Self>) {
        if self.len() > limit {
            return (self, Replay::never());
        }
        let copy = self.clone();
        (self, Replay::copy(copy))
    }
}

impl ReplayBody for () {
    fn replay(self, _limit: usize) -> (Self, Replay<Self>) {
        (self, Replay::copy(()))
    }
}

// ---------------------------------------------------------------------------
// Type-erased bodies: recorded while sent
// ---------------------------------------------------------------------------

impl<E: 'static> ReplayBody for UnsyncBoxBody<Bytes, E> {
    fn replay(self, limit: usize) -> (Self, Replay<Self>) {
        Replay::record(self, limit, UnsyncBoxBody::new, UnsyncBoxBody::new)
    }
}

impl<E: 'static> ReplayBody for BoxBody<Bytes, E> {
    fn replay(self, limit: usize) -> (Self, Replay<Self>) {
        Replay::record(self, limit, BoxBody::new, BoxBody::new)
    }
}

#[cfg(feature = "axum")]
impl ReplayBody for axum_core::body::Body {
    fn replay(self, limit: usize) -> (Self, Replay<Self>) {
        Replay::record(self, limit, Self::new, Self::new)
    }
}

#[cfg(feature = "tonic")]
impl ReplayBody for tonic::body::Body {
    fn replay(self, limit: usize) -> (Self, Replay<Self>) {
        Replay::record(self, limit, Self::new, Self::new)
    }
}

#[cfg(feature = "reqwest")]
impl ReplayBody for reqwest::Body {
    fn replay(self, limit: usize) -> (Self, Replay<Self>) {
        if let Some(bytes) = self.as_bytes() {
            if bytes.len() > limit {
                return (self, Replay::never());
            }
            let copy = reqwest::Body::from(Bytes::copy_from_slice(bytes));
            return (self, Replay::copy(copy));
        }
        Replay::record(self, limit, reqwest::Body::wrap, reqwest::Body::wrap)
    }
}
