//! In-memory limits: a token bucket per token on admin writes (429 with
//! Retry-After past it), and a cap on how many refused attempts per
//! principal per minute are written to the audit log, so a flood of bad
//! requests cannot fill the disk.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct WriteLimiter {
    rate: WriteRate,
    buckets: Mutex<HashMap<uuid::Uuid, Bucket>>,
}

impl WriteLimiter {
    pub fn new(rate: WriteRate) -> WriteLimiter {
        WriteLimiter { rate, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one write from `token`'s bucket, or says how many seconds
    /// until one is available.
    pub fn take(&self, token: uuid::Uuid) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.entry(token).or_insert(Bucket { tokens: self.rate.burst, last: now });
        let refill = now.duration_since(bucket.last).as_secs_f64() * self.rate.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.rate.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / self.rate.rate.max(f64::MIN_POSITIVE);
        Err(wait.ceil().max(1.0) as u64)
    }
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
    fn refusals_past_the_cap_are_counted_not_recorded() {
        let limiter = RefusalLimiter::default();
        let decisions: Vec<_> = (0..REFUSALS_PER_MINUTE + 5).map(|_| limiter.decide("anonymous")).collect();
        assert!(decisions[..REFUSALS_PER_MINUTE as usize].iter().all(|d| d.record));
        assert!(decisions[REFUSALS_PER_MINUTE as usize..].iter().all(|d| !d.record));
        assert!(limiter.decide("alice").record, "each principal has its own window");
    }
}
