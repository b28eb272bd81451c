//! Submissions per second per account: a token bucket per account, as large as one second of
//! its rate. REST submissions run on the coordinator that leads (the others forward them), so
//! its buckets count every coordinator's; MQTT submissions are not counted (their account's
//! balance, in-flight limit and spending cap still apply).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The buckets.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Takes one submission of `account`, limited to `per_second`; `Err` with the whole
    /// seconds to wait when its bucket is empty.
    pub fn take(&self, account: &str, per_second: f64, now: Instant) -> Result<(), u64> {
        let burst = per_second.max(1.0);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(account.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_second).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(r.take("a", 2.0, t0), Ok(()));
        }
        assert_eq!(r.take("a", 2.0, t0), Err(1));
        assert_eq!(r.take("b", 2.0, t0), Ok(()), "buckets are per account");
        assert_eq!(r.take("a", 2.0, t0 + Duration::from_millis(500)), Ok(()));
        assert_eq!(r.take("a", 2.0, t0 + Duration::from_millis(500)), Err(1));
        // A slow rate: one every 10 s.
        assert_eq!(r.take("c", 0.1, t0), Ok(()));
        assert_eq!(r.take("c", 0.1, t0), Err(10));
    }
}
