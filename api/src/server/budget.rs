//! Per-token query budgets: a token bucket per bearer token that refills at the cost per second
//! of the caller's best role and holds `cost_burst_seconds` of it. A request is admitted while
//! the bucket is not empty and charged afterwards what it actually resolved, so a large answer
//! may leave the bucket in debt; the token's next requests get `429` with `Retry-After` until
//! the debt is paid. One viewer sending heavy queries is slowed; other tokens are not.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Most tokens tracked at once; past it, buckets that are full again are forgotten (a full
/// bucket is what a new token gets anyway).
pub const MAX_TRACKED_TOKENS: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Cost units available; negative is debt.
    level: f64,
    updated: Instant,
}

/// The buckets of every token seen recently.
#[derive(Debug)]
pub struct Budgets {
    burst_seconds: f64,
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

/// Refused: the token's bucket is empty; retry after this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter {
    /// Whole seconds, at least 1.
    pub seconds: u64,
}

impl Budgets {
    /// Buckets holding `burst_seconds` of their rate.
    pub fn new(burst_seconds: u64) -> Budgets {
        Budgets { burst_seconds: burst_seconds as f64, buckets: Mutex::new(HashMap::new()) }
    }

    fn refill(&self, bucket: &mut Bucket, cost_per_second: u64, now: Instant) {
        let capacity = cost_per_second as f64 * self.burst_seconds;
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.level = (bucket.level + elapsed * cost_per_second as f64).min(capacity);
        bucket.updated = now;
    }

    /// Whether `token` may run a request now.
    pub fn admit(&self, token: Uuid, cost_per_second: u64, now: Instant) -> Result<(), RetryAfter> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(bucket) = buckets.get_mut(&token) else { return Ok(()) };
        self.refill(bucket, cost_per_second, now);
        if bucket.level > 0.0 {
            return Ok(());
        }
        let seconds = (-bucket.level / cost_per_second.max(1) as f64).ceil().max(1.0) as u64;
        Err(RetryAfter { seconds })
    }

    /// Takes `cost` from `token`'s bucket (into debt if need be).
    pub fn charge(&self, token: Uuid, cost_per_second: u64, cost: u64, now: Instant) {
        let capacity = cost_per_second as f64 * self.burst_seconds;
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_TRACKED_TOKENS && !buckets.contains_key(&token) {
            let rate = cost_per_second as f64;
            buckets.retain(|_, b| b.level + now.saturating_duration_since(b.updated).as_secs_f64() * rate < capacity);
        }
        let bucket = buckets.entry(token).or_insert(Bucket { level: capacity, updated: now });
        self.refill(bucket, cost_per_second, now);
        bucket.level -= cost as f64;
    }

    /// Tokens tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}

/// `Retry-After` as a duration.
impl From<RetryAfter> for Duration {
    fn from(retry: RetryAfter) -> Duration {
        Duration::from_secs(retry.seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_until_empty_then_refuses_until_refilled() {
        let budgets = Budgets::new(2);
        let (token, other) = (Uuid::now_v7(), Uuid::now_v7());
        let start = Instant::now();
        assert_eq!(budgets.admit(token, 100, start), Ok(()));
        // 200 units of burst; a 500-unit answer leaves 300 of debt: three seconds.
        budgets.charge(token, 100, 500, start);
        assert_eq!(budgets.admit(token, 100, start), Err(RetryAfter { seconds: 3 }));
        assert_eq!(budgets.admit(other, 100, start), Ok(()), "another token is not slowed");
        assert_eq!(budgets.admit(token, 100, start + Duration::from_millis(2_900)), Err(RetryAfter { seconds: 1 }));
        assert_eq!(budgets.admit(token, 100, start + Duration::from_millis(3_100)), Ok(()));
        // Refilling stops at the burst.
        budgets.charge(token, 100, 0, start + Duration::from_secs(1_000));
        budgets.charge(token, 100, 200, start + Duration::from_secs(1_000));
        assert_eq!(budgets.admit(token, 100, start + Duration::from_secs(1_000)), Err(RetryAfter { seconds: 1 }));
    }

    #[test]
    fn full_buckets_are_forgotten_at_the_bound() {
        let budgets = Budgets::new(1);
        let now = Instant::now();
        for _ in 0..MAX_TRACKED_TOKENS {
            budgets.charge(Uuid::now_v7(), 10, 0, now);
        }
        assert_eq!(budgets.tracked(), MAX_TRACKED_TOKENS);
        budgets.charge(Uuid::now_v7(), 10, 5, now);
        assert_eq!(budgets.tracked(), 1, "the full ones went; the one in use stays");
    }
}
