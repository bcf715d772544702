//! The end of a cache's tokens: `shutdown()`, revoke on drop, revoke on
//! process exit, and revoking a replaced token.
//!
//! A revocation that nobody awaits is a [`Detached`] value. It first runs as
//! a task on the current runtime, which never blocks. If the runtime drops
//! that task before it has finished (the end of `#[tokio::main]`, a runtime
//! shutting down), or there is no runtime at all, the value's `Drop`
//! finishes the revocation on a thread of its own, with a runtime of its
//! own, and waits for it at most the configured time; the wait blocks only
//! the thread that drops it, which at that point is a runtime shutting down
//! or a thread outside any runtime.

use super::flight::Shared;
use super::{CachedToken, Counters};
use crate::error::Error;
use crate::revoke::{RevokeRequest, RevokeService};
use crate::secret::RefreshToken;
use crate::token::Token;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::Instrument as _;

/// Tokens that arrived after `shutdown` began: revoked, never published.
pub(super) type Late = Vec<Token>;

/// What to revoke for a cached token and a refresh token: the access token
/// (left empty when there is none) with the refresh token.
pub(super) fn held(cached: Option<&CachedToken>, refresh: Option<RefreshToken>) -> Token {
    let access = cached.map_or_else(
        || Token::new(String::new()),
        |c| Token::new(c.token.access_token().clone()),
    );
    match refresh {
        Some(refresh) => access.with_refresh_token(refresh),
        None => access,
    }
}

/// The revocation requests for `tokens`, in the order the dialect wants.
fn requests(revoker: &RevokeService, tokens: &[Token]) -> VecDeque<RevokeRequest> {
    tokens
        .iter()
        .flat_map(|token| {
            if token.access_token().secret().is_empty() {
                token
                    .refresh_token()
                    .map(|refresh| RevokeRequest::refresh(refresh.clone()))
                    .into_iter()
                    .collect()
            } else {
                revoker.requests_for(token)
            }
        })
        .collect()
}

/// Sends one revocation request and counts it when the server confirms.
async fn revoke_one(
    revoker: &RevokeService,
    request: RevokeRequest,
    counters: &Counters,
) -> Result<(), Error> {
    let kind = request.kind();
    let span = tracing::info_span!("tower_token::revoke", kind = kind.as_str());
    let mut svc = revoker.clone();
    match tower_service::Service::call(&mut svc, request)
        .instrument(span)
        .await
    {
        Ok(()) => {
            counters.revocations.fetch_add(1, Ordering::Relaxed);
            tracing::info!(kind = kind.as_str(), "token revoked");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(kind = kind.as_str(), error = %e, "token revocation failed");
            Err(e)
        }
    }
}

impl Shared {
    /// Empties the cache and returns everything it held, for revocation:
    /// the current token with the refresh token, and any token that landed
    /// after a `shutdown` began.
    pub(super) fn take_tokens(&self) -> Vec<Token> {
        let mut flight = self.lock();
        let current = self.clear(&mut flight);
        let refresh = flight.refresh_token.take();
        let mut tokens = std::mem::take(&mut flight.late);
        if current.is_some() || refresh.is_some() {
            tokens.insert(0, held(current.as_deref(), refresh));
        }
        tokens
    }

    /// Whether the cache's tokens are shared with a fleet through a store:
    /// then one replica leaving revokes nothing.
    fn shares_tokens(&self) -> bool {
        #[cfg(feature = "store")]
        if self.config.fleet.is_some() {
            return true;
        }
        false
    }

    /// See [`TokenCache::shutdown_fleet`](super::TokenCache::shutdown_fleet).
    #[cfg(feature = "store")]
    pub(super) async fn shutdown_fleet(&self) -> Result<(), Error> {
        let fingerprint = self
            .current_token()
            .and_then(|c| c.stored.as_ref().map(|s| s.fingerprint.clone()));
        if let (Some(fleet), Some(fingerprint)) = (&self.config.fleet, &fingerprint) {
            fleet.remove(&self.counters, fingerprint).await;
        }
        match self.config.revoker.clone() {
            Some(revoker) => self.revoke_all(&revoker).await,
            None => {
                self.take_tokens();
                Ok(())
            }
        }
    }

    /// See [`TokenCache::shutdown`](super::TokenCache::shutdown).
    pub(super) async fn shutdown(&self) -> Result<(), Error> {
        if self.shares_tokens() {
            // The fleet goes on using the token: forget it, revoke nothing.
            self.take_tokens();
            return Ok(());
        }
        let Some(revoker) = self.config.revoker.clone() else {
            return Ok(());
        };
        let in_flight = {
            let mut flight = self.lock();
            let waiting = flight.waiting.clone();
            flight.discard_in_flight = waiting.is_some();
            waiting
        };
        let mut result = self.revoke_all(&revoker).await;
        if let Some(mut waiting) = in_flight {
            // The fetch keeps its token to itself (see `discard_in_flight`);
            // wait for it to land, then revoke it too.
            let _ = waiting.wait_for(Option::is_some).await;
            let late = self.revoke_all(&revoker).await;
            result = result.and(late);
        }
        result
    }

    async fn revoke_all(&self, revoker: &RevokeService) -> Result<(), Error> {
        let mut first_error = None;
        for request in requests(revoker, &self.take_tokens()) {
            if let Err(e) = revoke_one(revoker, request, &self.counters).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Revokes `token` without waiting for it (a replaced token, the last
    /// handle dropped); see [`Detached`].
    pub(super) fn revoke_in_background(&self, tokens: &[Token], why: &'static str) {
        let Some(revoker) = self.config.revoker.clone() else {
            return;
        };
        let detached = Detached {
            requests: requests(&revoker, tokens),
            revoker,
            counters: Arc::clone(&self.counters),
            wait: self.config.revoke_on_drop_timeout,
            why,
        };
        if detached.requests.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::debug!(why, "revoking a token in a background task");
                // A runtime that is shutting down drops the task at once;
                // `Detached::drop` then finishes the work.
                drop(runtime.spawn(detached.run()));
            }
            // No runtime: the drop below revokes on a thread of its own.
            Err(_) => drop(detached),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if !self.config.revoke_on_drop || self.config.revoker.is_none() {
            return;
        }
        if self.shares_tokens() {
            tracing::debug!("the token is shared with the fleet: not revoked on drop");
            return;
        }
        if std::thread::panicking() {
            tracing::warn!("dropped while panicking: the cached token was not revoked");
            return;
        }
        self.revoke_in_background(&self.take_tokens(), "last handle dropped");
    }
}

/// A revocation that nobody awaits; see the [module docs](self).
struct Detached {
    revoker: RevokeService,
    /// What is left to send: each request is removed once it was answered.
    requests: VecDeque<RevokeRequest>,
    counters: Arc<Counters>,
    wait: Duration,
    why: &'static str,
}

impl Detached {
    async fn run(mut self) {
        while let Some(request) = self.requests.front().cloned() {
            let _ = revoke_one(&self.revoker, request, &self.counters).await;
            self.requests.pop_front();
        }
    }

    /// Finishes the revocation on a thread with a runtime of its own, and
    /// waits for it at most `self.wait`.
    fn finish_on_own_thread(&mut self) {
        let requests = std::mem::take(&mut self.requests);
        let revoker = self.revoker.clone();
        let counters = Arc::clone(&self.counters);
        let (wait, why) = (self.wait, self.why);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("tower-token-revoke".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::warn!(why, error = %e, "no runtime could be built: the token was not revoked");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let all = async {
                        for request in requests {
                            let _ = revoke_one(&revoker, request, &counters).await;
                        }
                    };
                    // Nobody waits longer than `wait`; neither does this.
                    let _ = tokio::time::timeout(wait, all).await;
                });
                let _ = done_tx.send(());
            });
        match spawned {
            Ok(_) => match done_rx.recv_timeout(wait) {
                Ok(()) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => tracing::warn!(
                    why,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "the revocation did not finish in time: the token may still be live"
                ),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
            },
            Err(e) => tracing::warn!(
                why,
                error = %e,
                "no thread could be started: the token was not revoked"
            ),
        }
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if self.requests.is_empty() {
            return;
        }
        if std::thread::panicking() {
            tracing::warn!(
                why = self.why,
                "dropped while panicking: the token was not revoked"
            );
            return;
        }
        self.finish_on_own_thread();
    }
}
