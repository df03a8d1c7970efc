//! The request rate of one WebSocket: a token bucket. A client over it gets error answers; one
//! that keeps sending while refused is flooding and gets closed.

use std::time::Instant;

/// Refused requests in a row after which a client counts as flooding.
const REFUSALS_BEFORE_CLOSE: u32 = 50;

pub struct RequestRate {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    refused_in_a_row: u32,
}

impl RequestRate {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        RequestRate {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            refilled: Instant::now(),
            refused_in_a_row: 0,
        }
    }

    /// Takes a token for one request; `false` when the bucket is empty.
    pub fn admit(&mut self) -> bool {
        self.admit_at(Instant::now())
    }

    fn admit_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            true
        } else {
            self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
            false
        }
    }

    /// The client went on sending through [`REFUSALS_BEFORE_CLOSE`] refusals.
    pub fn flooding(&self) -> bool {
        self.refused_in_a_row >= REFUSALS_BEFORE_CLOSE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut rate = RequestRate::new(10, 5);
        rate.refilled = start;
        assert!((0..5).all(|_| rate.admit_at(start)));
        assert!(!rate.admit_at(start));
        assert!(!rate.flooding());
        assert!(rate.admit_at(start + Duration::from_millis(100)));
        assert!(!rate.admit_at(start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(60);
        assert!(
            (0..5).all(|_| rate.admit_at(later)),
            "refills up to the burst"
        );
        assert!(!rate.admit_at(later));
    }

    #[test]
    fn refused_in_a_row_means_flooding() {
        let now = Instant::now();
        let mut rate = RequestRate::new(1, 1);
        rate.refilled = now;
        assert!(rate.admit_at(now));
        for _ in 0..REFUSALS_BEFORE_CLOSE {
            assert!(!rate.admit_at(now));
        }
        assert!(rate.flooding());
        assert!(rate.admit_at(now + Duration::from_secs(1)));
        assert!(!rate.flooding());
    }
}
