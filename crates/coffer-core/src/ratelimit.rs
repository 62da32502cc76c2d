//! Slows down guessing at login endpoints: each source address has, per auth mount, a bucket of
//! failed logins that refills over time. While the bucket is empty every login from that address
//! to that mount is refused with 429 before the method even looks at the credential, so guessing
//! runs at the refill rate however fast the attacker sends. Successful logins cost nothing, so
//! busy workloads that log in correctly are never slowed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many failed logins one address may make on one mount, and how fast that allowance
/// comes back. `burst == 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoginLimit {
    pub burst: u32,
    /// One more failure is allowed every `refill`.
    pub refill: Duration,
}

impl Default for LoginLimit {
    fn default() -> Self {
        Self { burst: 20, refill: Duration::from_secs(1) }
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Failures still allowed, as of `at`.
    left: f64,
    at: Instant,
}

/// Beyond this many tracked addresses, full buckets (which carry no information) are dropped.
const MAX_TRACKED: usize = 65_536;

pub(crate) struct LoginLimiter {
    limit: LoginLimit,
    buckets: Mutex<HashMap<(String, Option<IpAddr>), Bucket>>,
}

impl LoginLimiter {
    pub(crate) fn new(limit: LoginLimit) -> Self {
        Self { limit, buckets: Mutex::new(HashMap::new()) }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let per = self.limit.refill.as_secs_f64().max(f64::MIN_POSITIVE);
        (b.left + now.duration_since(b.at).as_secs_f64() / per).min(f64::from(self.limit.burst))
    }

    /// Whether a login from `addr` to `mount` may be tried now.
    pub(crate) fn allows(&self, mount: &str, addr: Option<IpAddr>) -> bool {
        if self.limit.burst == 0 {
            return true;
        }
        let Ok(map) = self.buckets.lock() else { return true };
        match map.get(&(mount.to_owned(), addr)) {
            None => true,
            Some(b) => self.refilled(*b, Instant::now()) >= 1.0,
        }
    }

    /// Counts one failed login.
    pub(crate) fn failed(&self, mount: &str, addr: Option<IpAddr>) {
        if self.limit.burst == 0 {
            return;
        }
        let Ok(mut map) = self.buckets.lock() else { return };
        let now = Instant::now();
        if map.len() >= MAX_TRACKED {
            let full = f64::from(self.limit.burst);
            map.retain(|_, b| self.refilled(*b, now) < full);
        }
        let burst = f64::from(self.limit.burst);
        let b = map.entry((mount.to_owned(), addr)).or_insert(Bucket { left: burst, at: now });
        let left = self.refilled(*b, now);
        *b = Bucket { left: (left - 1.0).max(0.0), at: now };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_burst_are_refused_until_refilled() {
        let l = LoginLimiter::new(LoginLimit { burst: 3, refill: Duration::from_millis(200) });
        let a: Option<IpAddr> = Some("10.0.0.1".parse().expect("ip"));
        let b: Option<IpAddr> = Some("10.0.0.2".parse().expect("ip"));
        for _ in 0..3 {
            assert!(l.allows("approle", a));
            l.failed("approle", a);
        }
        assert!(!l.allows("approle", a));
        // Other addresses and other mounts are not affected.
        assert!(l.allows("approle", b));
        assert!(l.allows("jwt", a));
        std::thread::sleep(Duration::from_millis(250));
        assert!(l.allows("approle", a));
    }

    #[test]
    fn zero_burst_disables() {
        let l = LoginLimiter::new(LoginLimit { burst: 0, refill: Duration::from_secs(1) });
        for _ in 0..100 {
            l.failed("m", None);
        }
        assert!(l.allows("m", None));
    }
}
