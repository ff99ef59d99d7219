//! In-memory limits: a rate limit per token on admin writes (`governor`'s
//! keyed limiter; 429 with Retry-After past it), and a cap on how many refused attempts per
//! principal per minute are written to the audit log, so a flood of bad
//! requests cannot fill the disk.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Admin writes allowed per token: `rate` per second on average, bursts of
/// up to `burst`.
#[derive(Debug, Clone, Copy)]
pub struct WriteRate {
    pub rate: f64,
    pub burst: f64,
}

impl Default for WriteRate {
    fn default() -> WriteRate {
        WriteRate { rate: 50.0, burst: 100.0 }
    }
}

/// The longest gap between two writes a rate may ask for (a rate of zero or
/// less, or one too small to express, is taken as one write a day).
const LONGEST_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// The per-token write limit: `governor`'s keyed GCRA limiter, which behaves
/// as a token bucket of `burst` writes refilled at `rate` per second.
pub struct WriteLimiter {
    limiter: DefaultKeyedRateLimiter<uuid::Uuid>,
}

impl WriteLimiter {
    pub fn new(rate: WriteRate) -> WriteLimiter {
        WriteLimiter { limiter: RateLimiter::keyed(quota(rate)) }
    }

    /// Takes one write from `token`'s bucket, or says how many seconds
    /// until one is available (at least 1, for a `Retry-After` header).
    pub fn take(&self, token: uuid::Uuid) -> Result<(), u64> {
        self.limiter.check_key(&token).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }
}

/// The quota for a configured rate: one write every `1 / rate` seconds (at
/// least a nanosecond, at most `LONGEST_PERIOD`), bursts of `burst` (at
/// least one).
fn quota(rate: WriteRate) -> Quota {
    let period = if rate.rate.is_finite() && rate.rate > 0.0 {
        Duration::try_from_secs_f64(1.0 / rate.rate).unwrap_or(LONGEST_PERIOD)
    } else {
        LONGEST_PERIOD
    };
    let period = period.clamp(Duration::from_nanos(1), LONGEST_PERIOD);
    let burst = if rate.burst.is_finite() { rate.burst.clamp(1.0, f64::from(u32::MAX)) as u32 } else { u32::MAX };
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX)).allow_burst(burst)
}

/// Refused attempts written to the audit log per principal per minute; the
/// rest are counted and written as one summary record.
pub const REFUSALS_PER_MINUTE: u32 = 60;
const WINDOW: Duration = Duration::from_secs(60);

struct Window {
    start: Instant,
    written: u32,
    suppressed: u64,
}

/// What to do with one refused attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalDecision {
    /// Write this attempt's own record.
    pub record: bool,
    /// First write a summary of this many attempts suppressed in the
    /// principal's previous window.
    pub summarize: u64,
}

#[derive(Default)]
pub struct RefusalLimiter {
    windows: Mutex<HashMap<String, Window>>,
}

impl RefusalLimiter {
    pub fn decide(&self, principal: &str) -> RefusalDecision {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = windows.entry(principal.to_string()).or_insert(Window { start: now, written: 0, suppressed: 0 });
        let mut summarize = 0;
        if now.duration_since(window.start) >= WINDOW {
            summarize = window.suppressed;
            *window = Window { start: now, written: 0, suppressed: 0 };
        }
        if window.written < REFUSALS_PER_MINUTE {
            window.written += 1;
            RefusalDecision { record: true, summarize }
        } else {
            window.suppressed += 1;
            RefusalDecision { record: false, summarize }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_asks_to_retry_later() {
        let limiter = WriteLimiter::new(WriteRate { rate: 1.0, burst: 3.0 });
        let token = uuid::Uuid::new_v4();
        assert_eq!((0..3).map(|_| limiter.take(token)).collect::<Vec<_>>(), vec![Ok(()); 3]);
        assert_eq!(limiter.take(token), Err(1));
        assert_eq!(limiter.take(uuid::Uuid::new_v4()), Ok(()), "buckets are per token");
    }

    #[test]
    fn a_slow_rate_asks_for_the_whole_period_and_odd_rates_still_limit() {
        let limiter = WriteLimiter::new(WriteRate { rate: 0.5, burst: 1.0 });
        let token = uuid::Uuid::new_v4();
        assert_eq!(limiter.take(token), Ok(()));
        assert_eq!(limiter.take(token), Err(2));
        for rate in [0.0, -1.0, f64::NAN] {
            let limiter = WriteLimiter::new(WriteRate { rate, burst: 0.0 });
            assert_eq!(limiter.take(token), Ok(()), "a burst below one still allows one write");
            assert_eq!(limiter.take(token), Err(LONGEST_PERIOD.as_secs()), "rate {rate}");
        }
    }

    #[test]
    fn refusals_past_the_cap_are_counted_not_recorded() {
        let limiter = RefusalLimiter::default();
        let decisions: Vec<_> = (0..REFUSALS_PER_MINUTE + 5).map(|_| limiter.decide("anonymous")).collect();
        assert!(decisions[..REFUSALS_PER_MINUTE as usize].iter().all(|d| d.record));
        assert!(decisions[REFUSALS_PER_MINUTE as usize..].iter().all(|d| !d.record));
        assert!(limiter.decide("alice").record, "each principal has its own window");
    }
}
