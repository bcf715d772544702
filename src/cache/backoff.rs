//! Exponential backoff with jitter for failed token fetches.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The longest `Retry-After` honoured; longer values are cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How long to wait before the next token attempt after failures.
///
/// The n-th consecutive failure waits a random time between half and all of
/// `initial × 2ⁿ⁻¹`, capped at `max`; a server's `Retry-After` is a floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// The delay after the first failure (default 500 ms).
    pub initial: Duration,
    /// The longest delay (default 30 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// A backoff whose first delay is `initial`, doubling up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The delay after `failures` consecutive failures (at least 1).
    pub(crate) fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let shift = failures.saturating_sub(1).min(20);
        let ceiling = self.initial.saturating_mul(1 << shift).min(self.max);
        let half = ceiling / 2;
        // Float arithmetic cannot overflow here (the factor is below 1), but
        // stay panic-free whatever the settings.
        let jitter = Duration::try_from_secs_f64(half.as_secs_f64() * unit_random())
            .unwrap_or(Duration::ZERO);
        let delay = half.saturating_add(jitter);
        match retry_after {
            Some(after) => delay.max(after.min(MAX_RETRY_AFTER)),
            None => delay,
        }
    }
}

/// A random number in `[0, 1)`, from the standard library's per-map keys.
fn unit_random() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_bounds() {
        let b = Backoff::default();
        for failures in 1..40 {
            let ceiling = b
                .initial
                .saturating_mul(1 << (failures - 1).min(20))
                .min(b.max);
            let d = b.delay(failures, None);
            assert!(d >= ceiling / 2 && d <= ceiling, "{failures}: {d:?}");
        }
        assert!(b.delay(1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
        assert_eq!(b.delay(1, Some(Duration::from_secs(9999))), MAX_RETRY_AFTER);
    }

    #[test]
    fn extreme_settings_do_not_panic() {
        for b in [
            Backoff {
                initial: Duration::MAX,
                max: Duration::MAX,
            },
            Backoff {
                initial: Duration::ZERO,
                max: Duration::ZERO,
            },
            Backoff {
                initial: Duration::MAX,
                max: Duration::ZERO,
            },
        ] {
            for failures in [0, 1, 2, 63, 64, u32::MAX] {
                let d = b.delay(failures, Some(Duration::MAX));
                assert!(d <= b.max.max(MAX_RETRY_AFTER), "{b:?} {failures}: {d:?}");
            }
        }
    }
}
