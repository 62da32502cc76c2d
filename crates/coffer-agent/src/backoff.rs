//! Exponential backoff with jitter: each delay doubles up to a ceiling, and is drawn at random
//! from its upper three quarters, so agents that lost the server together do not come back in
//! step.

use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, current: min }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        jitter(d, 0.25)
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }
}

/// `d` shortened by a random fraction of at most `frac`.
pub(crate) fn jitter(d: Duration, frac: f64) -> Duration {
    d.mul_f64(1.0 - frac * random_unit())
}

/// A uniformly random number in [0, 1).
pub(crate) fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    // Timing jitter needs no secrecy, but the one random source in the tree is the right one.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// A random delay up to `max` (the splay before a fleet-wide restart).
pub(crate) fn splay(max: Duration) -> Duration {
    max.mul_f64(random_unit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let expected = [1.0, 2.0, 4.0, 5.0, 5.0];
        for e in expected {
            let d = b.next_delay().as_secs_f64();
            assert!(d <= e && d >= e * 0.75, "{d} not within [{}, {e}]", e * 0.75);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn random_unit_is_in_range() {
        for _ in 0..1000 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
