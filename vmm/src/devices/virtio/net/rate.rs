//! Token buckets for the net device's bandwidth limits: a bucket fills at `bytes_per_sec` up to
//! its burst; a frame goes when the bucket holds its size (it waits, it is never dropped, as
//! the guest's TCP would otherwise see losses for what is only a limit).

use std::time::{Duration, Instant};

use hako_vmm_api::Bandwidth;

#[derive(Debug)]
pub struct TokenBucket {
    bytes_per_sec: u64,
    burst: u64,
    tokens: u64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl TokenBucket {
    /// A full bucket (a second's worth unless the burst says otherwise).
    pub fn new(limit: Bandwidth, now: Instant) -> Self {
        let burst = limit.burst_bytes.unwrap_or(limit.bytes_per_sec).max(1);
        Self {
            bytes_per_sec: limit.bytes_per_sec.max(1),
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let ns = now.saturating_duration_since(self.at).as_nanos();
        let earned = ns * u128::from(self.bytes_per_sec) / 1_000_000_000;
        if earned > 0 {
            self.tokens = self.burst.min(
                self.tokens
                    .saturating_add(u64::try_from(earned).unwrap_or(u64::MAX)),
            );
            // Keep the remainder of a partly earned byte by advancing only by what it cost.
            let spent_ns = earned * 1_000_000_000 / u128::from(self.bytes_per_sec);
            self.at += Duration::from_nanos(u64::try_from(spent_ns).unwrap_or(u64::MAX));
            if self.tokens == self.burst {
                self.at = now;
            }
        }
    }

    /// How long until a frame of `len` bytes may go (zero: now). Frames above the burst go
    /// when the bucket is full.
    pub fn wait_for(&mut self, len: usize, now: Instant) -> Duration {
        self.refill(now);
        let need = (len as u64).min(self.burst);
        if self.tokens >= need {
            return Duration::ZERO;
        }
        let missing = u128::from(need - self.tokens);
        let ns = missing * 1_000_000_000 / u128::from(self.bytes_per_sec) + 1;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Takes a frame's worth (call when [`wait_for`](Self::wait_for) said zero).
    pub fn take(&mut self, len: usize) {
        self.tokens = self.tokens.saturating_sub(len as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_its_burst_through_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            Bandwidth {
                bytes_per_sec: 1_000_000,
                burst_bytes: Some(100_000),
            },
            t0,
        );
        for _ in 0..10 {
            assert_eq!(b.wait_for(10_000, t0), Duration::ZERO);
            b.take(10_000);
        }
        // Empty: 10 000 bytes at 1 MB/s take 10 ms.
        let w = b.wait_for(10_000, t0);
        assert!(
            w > Duration::from_micros(9_990) && w <= Duration::from_micros(10_001),
            "{w:?}"
        );
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(b.wait_for(10_000, t1), Duration::ZERO);
        b.take(10_000);
        // A long idle time fills it to the burst only.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(b.wait_for(100_000, t2), Duration::ZERO);
        b.take(100_000);
        assert!(b.wait_for(1, t2) > Duration::ZERO);
    }

    #[test]
    fn a_frame_above_the_burst_goes_when_the_bucket_is_full() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            Bandwidth {
                bytes_per_sec: 1000,
                burst_bytes: Some(100),
            },
            t0,
        );
        assert_eq!(b.wait_for(5000, t0), Duration::ZERO);
        b.take(5000);
        let w = b.wait_for(5000, t0);
        assert!(
            w >= Duration::from_millis(100) && w < Duration::from_millis(101),
            "{w:?}"
        );
    }
}
