//! Each service clone's own copy of the current token.
//!
//! A request reads the cache's generation (one atomic load, never written
//! on the request path) and, while it has not moved, sends the copy the
//! clone holds. The copy has header bytes of its own and its own handle on
//! the face for the futures of its requests, so the reference counts a
//! request touches belong to that clone alone: requests of clones on
//! different cores write no reference count in common.
//!
//! A new clone shares the copy of the clone it was made from, for its
//! first request; its second request makes a copy of its own. So the
//! per-call clone (`svc.clone().oneshot(req)`) allocates nothing, and a
//! clone that lives on allocates once, then again only when the token
//! changes.

use crate::cache::{Deadlines, Snapshot};
use crate::face::Face;
use bytes::Bytes;
use http::HeaderValue;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// A clone's copy of the current token, and its handle on the face.
pub(crate) struct Own {
    pub(crate) face: Arc<Face>,
    pub(crate) generation: u64,
    pub(crate) header: HeaderValue,
    pub(crate) deadlines: Deadlines,
    /// The `ath` of a DPoP-bound token.
    #[cfg(feature = "jose")]
    pub(crate) ath: Option<Arc<str>>,
}

impl Own {
    /// A copy of a token, with header bytes of its own.
    fn new(
        face: &Arc<Face>,
        generation: u64,
        header: &HeaderValue,
        deadlines: Deadlines,
        #[cfg(feature = "jose")] ath: Option<Arc<str>>,
    ) -> Self {
        Self {
            face: Arc::clone(face),
            generation,
            header: private_copy(header),
            deadlines,
            #[cfg(feature = "jose")]
            ath,
        }
    }

    fn from_snapshot(face: &Arc<Face>, snapshot: Snapshot) -> Self {
        Self::new(
            face,
            snapshot.generation,
            &snapshot.header,
            snapshot.deadlines,
            #[cfg(feature = "jose")]
            snapshot.ath,
        )
    }
}

/// `value` in bytes of its own: cloning the copy touches no count that
/// another copy shares.
fn private_copy(value: &HeaderValue) -> HeaderValue {
    // Cloned once here, so the copy's clones are plain reference counts
    // from the start (a vector's bytes become shared at their first clone).
    let bytes = Bytes::copy_from_slice(value.as_bytes()).clone();
    match HeaderValue::from_maybe_shared(bytes) {
        Ok(mut copy) => {
            copy.set_sensitive(value.is_sensitive());
            copy
        }
        // The bytes came from a valid value; keep sharing it otherwise.
        Err(_) => value.clone(),
    }
}

/// What a service clone keeps of the current token.
pub(crate) struct Local {
    own: Option<Arc<Own>>,
    /// Whether `own` was made by this clone, not inherited.
    mine: bool,
    /// Whether this clone sent a request without a copy of its own.
    borrowed: bool,
}

impl Clone for Local {
    /// Shares the copy until the clone's second request.
    fn clone(&self) -> Self {
        Self {
            own: self.own.clone(),
            mine: false,
            borrowed: false,
        }
    }
}

impl Default for Local {
    fn default() -> Self {
        Self::new()
    }
}

/// A usable token to send a request with, and the face its future
/// answers to.
pub(crate) struct Current {
    pub(crate) header: HeaderValue,
    /// The `ath` of a DPoP-bound token (`None` for a bearer token).
    #[cfg(feature = "jose")]
    pub(crate) ath: Option<Arc<str>>,
    pub(crate) generation: u64,
    /// Whether its refresh-ahead window has begun.
    pub(crate) refresh_due: bool,
    pub(crate) face: FaceHandle,
}

impl Current {
    /// `own`'s token if it is usable at `now` and `wall`.
    #[inline(always)]
    fn of(own: &Arc<Own>, now: Instant, wall: SystemTime) -> Option<Self> {
        if !own.deadlines.usable(now, wall) {
            return None;
        }
        Some(Self {
            header: own.header.clone(),
            #[cfg(feature = "jose")]
            ath: own.ath.clone(),
            generation: own.generation,
            refresh_due: own.deadlines.refresh_due(now, wall),
            face: FaceHandle::Own(Arc::clone(own)),
        })
    }
}

impl Local {
    pub(crate) const fn new() -> Self {
        Self {
            own: None,
            mine: false,
            borrowed: false,
        }
    }

    /// The token to send a request with when the cache's current generation
    /// is `generation`, if it is usable at `now` and `wall` (both clocks).
    /// `None` when the cache is empty or its token is not usable.
    #[inline(always)]
    pub(crate) fn usable(
        &mut self,
        face: &Arc<Face>,
        generation: u64,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Current> {
        if let Some(own) = &self.own
            && own.generation == generation
            && (self.mine || !std::mem::replace(&mut self.borrowed, true))
        {
            return Current::of(own, now, wall);
        }
        self.refresh(face, generation, now, wall)
    }

    /// The copy is stale, missing or inherited and used once already.
    #[cold]
    fn refresh(
        &mut self,
        face: &Arc<Face>,
        generation: u64,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Current> {
        let own = match &self.own {
            // Inherited, and this is the clone's second request.
            Some(own) if own.generation == generation => Own::new(
                face,
                own.generation,
                &own.header,
                own.deadlines,
                #[cfg(feature = "jose")]
                own.ath.clone(),
            ),
            _ => {
                let snapshot = face.cache.shared.snapshot()?;
                if !self.mine && !self.borrowed {
                    // A new clone's first request, perhaps its only one:
                    // no copy of its own yet.
                    self.borrowed = true;
                    let deadlines = snapshot.deadlines;
                    return deadlines.usable(now, wall).then(|| Current {
                        header: snapshot.header,
                        #[cfg(feature = "jose")]
                        ath: snapshot.ath,
                        generation: snapshot.generation,
                        refresh_due: deadlines.refresh_due(now, wall),
                        face: FaceHandle::Shared(Arc::clone(face)),
                    });
                }
                Own::from_snapshot(face, snapshot)
            }
        };
        let own = Arc::new(own);
        let current = Current::of(&own, now, wall);
        self.own = Some(own);
        self.mine = true;
        current
    }
}

/// The face a response future answers to: the clone's own copy on the
/// usual path, the shared face when the request waits for a token.
pub(crate) enum FaceHandle {
    Shared(Arc<Face>),
    Own(Arc<Own>),
}

impl Deref for FaceHandle {
    type Target = Face;

    #[inline]
    fn deref(&self) -> &Face {
        match self {
            Self::Shared(face) => face,
            Self::Own(own) => &own.face,
        }
    }
}
