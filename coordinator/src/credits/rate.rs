//! Submissions per second per account: a token bucket per account, as large as one second of
//! its rate. The scheduler's [`super::Book`] keeps the buckets, so every submission is counted
//! where it is reserved for, on the coordinator that leads: REST and MQTT alike, whichever
//! coordinator received it. A new leader starts with full buckets.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

/// The buckets.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<String, Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: DateTime<Utc>,
}

impl RateLimiter {
    /// Takes one submission of `account`, limited to `per_second`; `Err` with the whole
    /// seconds to wait when its bucket is empty.
    pub fn take(&mut self, account: &str, per_second: f64, now: DateTime<Utc>) -> Result<(), u64> {
        let burst = per_second.max(1.0);
        let b = self.buckets.entry(account.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = (now - b.at).num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1e6;
        b.tokens = (b.tokens + elapsed * per_second).min(burst);
        b.at = b.at.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / per_second).ceil();
            Err(if wait.is_finite() {
                wait.max(1.0) as u64
            } else {
                u64::MAX
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let mut r = RateLimiter::default();
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        for _ in 0..2 {
            assert_eq!(r.take("a", 2.0, t0), Ok(()));
        }
        assert_eq!(r.take("a", 2.0, t0), Err(1));
        assert_eq!(r.take("b", 2.0, t0), Ok(()), "buckets are per account");
        let later = t0 + Duration::milliseconds(500);
        assert_eq!(r.take("a", 2.0, later), Ok(()));
        assert_eq!(r.take("a", 2.0, later), Err(1));
        // A slow rate: one every 10 s; a rate too small to wait for says so.
        assert_eq!(r.take("c", 0.1, t0), Ok(()));
        assert_eq!(r.take("c", 0.1, t0), Err(10));
        assert_eq!(r.take("d", 5e-324, t0), Ok(()));
        assert_eq!(r.take("d", 5e-324, t0), Err(u64::MAX));
    }
}
