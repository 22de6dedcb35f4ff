//! [`RetryPolicy`]: the one retry policy of this crate. Every retry loop (the COPY sink's commit
//! units, the star sink's batches, the dimension store's member creation, replication's table
//! copies) asks it whether to retry and how long to wait.

use std::time::Duration;

use crate::error::{PgError, Result};

/// How often a unit of work is retried after a retryable error ([`PgError::is_retryable`]: a lost
/// connection, a deadlock, a serialization failure, a server shutdown, a client-side time-out), and
/// the exponential back-off between tries. Plain struct with documented defaults.
///
/// ```
/// use std::time::Duration;
/// let p = etlkit_postgres::RetryPolicy::default();
/// assert_eq!((p.backoff(1), p.backoff(2), p.backoff(30)), (Duration::from_millis(100), Duration::from_millis(200), Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try (0: never retry). Default 2.
    pub max_retries: u32,
    /// Wait before the first retry; each later retry waits twice as long. Default 100 ms.
    pub initial_backoff: Duration,
    /// Longest wait between two tries. Default 5 s.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub const NONE: RetryPolicy =
        RetryPolicy { max_retries: 0, initial_backoff: Duration::ZERO, max_backoff: Duration::ZERO };

    /// Checks the values: `max_backoff` ≥ `initial_backoff`.
    pub fn validate(&self) -> Result<()> {
        if self.max_backoff < self.initial_backoff {
            return Err(PgError::InvalidConfig {
                field: "retry.max_backoff",
                reason: "must be at least retry.initial_backoff".into(),
            });
        }
        Ok(())
    }

    /// The wait before retry number `retry` (1-based): `initial_backoff * 2^(retry - 1)`, at most
    /// `max_backoff`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// After `retries_so_far` retries failed with `error`: the wait before the next try, or `None`
    /// when the error is not retryable or the retries are used up.
    pub fn next_retry(&self, retries_so_far: u32, error: &PgError) -> Option<Duration> {
        (error.is_retryable() && retries_so_far < self.max_retries).then(|| self.backoff(retries_so_far + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_only_retryable_errors_up_to_max_retries_with_doubling_backoff() {
        let p = RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(25),
        };
        let transient = PgError::Timeout { action: "COPY", seconds: 1.0 };
        let waits: Vec<_> = (0..4).map(|n| p.next_retry(n, &transient)).collect();
        let ms = Duration::from_millis;
        assert_eq!(waits, [Some(ms(10)), Some(ms(20)), Some(ms(25)), None]);
        let bad = PgError::InvalidConfig { field: "x", reason: "y".into() };
        assert_eq!(p.next_retry(0, &bad), None);
        assert_eq!(RetryPolicy::NONE.next_retry(0, &transient), None);
        assert!(RetryPolicy { max_backoff: ms(1), ..p }.validate().is_err());
    }
}
