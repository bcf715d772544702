//! What the fuzz targets in `fuzz/` need from inside the crate: the deadline
//! arithmetic the cache applies to a parsed `expires_in`, and the delay it
//! derives from a parsed `Retry-After`. Compiled only with `--cfg fuzzing`.

use crate::cache::Backoff;
use std::time::{Duration, Instant, SystemTime};

/// The deadlines the cache gives a token (see [`deadlines`]).
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// When the refresh-ahead window starts, on the monotonic clock.
    pub refresh_at: Instant,
    /// When the token stops being sent, on the monotonic clock.
    pub usable_until: Instant,
    /// When the refresh-ahead window starts, on the wall clock.
    pub refresh_at_wall: SystemTime,
    /// When the token stops being sent, on the wall clock.
    pub usable_until_wall: SystemTime,
    /// When the token expires, on the wall clock.
    pub expires_at_wall: SystemTime,
}

/// The cache's deadlines for a token fetched at `started` with the lifetime
/// `expires_in` (else `default_lifetime`), computed exactly as the cache
/// computes them when it publishes a token.
pub fn deadlines(
    expires_in: Option<Duration>,
    default_lifetime: Duration,
    leeway: Duration,
    refresh_ahead: f64,
    started: Instant,
    started_wall: SystemTime,
) -> Deadlines {
    let (d, expires_at_wall) = crate::cache::deadlines(
        expires_in,
        default_lifetime,
        leeway,
        refresh_ahead,
        started,
        started_wall,
    );
    Deadlines {
        refresh_at: d.refresh_at,
        usable_until: d.usable_until,
        refresh_at_wall: d.refresh_at_wall,
        usable_until_wall: d.usable_until_wall,
        expires_at_wall,
    }
}

/// The delay the cache waits after `failures` failed fetches in a row, the
/// last one answered with `retry_after`.
pub fn backoff_delay(backoff: Backoff, failures: u32, retry_after: Option<Duration>) -> Duration {
    backoff.delay(failures, retry_after)
}
