//! How much of the time expiry works while requests are being served, adapted to what its work
//! costs those requests.
//!
//! Expiry work comes in units (one revocation, or reading a few index entries), each followed
//! by a rest. The pacer measures the requests started during each unit and during each rest:
//! both are measured in the same moments, on the same machine, so the comparison holds however
//! busy the machine is otherwise. What the work costs the foreground is its share of the time
//! times how much slower requests start while it runs; the pacer halves that share when the
//! cost passes [`TARGET_COST`] and raises it slowly while the cost stays well below.
//!
//! Guarantees: the share stays between [`MIN_DUTY`] and [`MAX_DUTY`], so expiry always makes
//! progress (a token is refused at its expiry regardless, see the lease module) and never takes
//! more than a quarter of the time while requests are served. A rest is at most [`MAX_REST`].
//! Not here: deciding whether requests are being served (the caller, by the request counter).

use std::time::Duration;

/// The lowest share of the time expiry works while requests are served.
pub(super) const MIN_DUTY: f64 = 1.0 / 64.0;
/// The highest share.
pub(super) const MAX_DUTY: f64 = 1.0 / 4.0;
/// Where the share starts: low, so a burst that begins under load starts gently.
const START_DUTY: f64 = 1.0 / 16.0;
/// The share of the foreground's request rate expiry may cost.
pub(super) const TARGET_COST: f64 = 0.03;
/// The longest rest after one unit, so one slow unit does not stall the drain for long.
pub(super) const MAX_REST: Duration = Duration::from_millis(200);
/// A judgement needs at least this many units and this much time...
const WINDOW_UNITS: u32 = 16;
const WINDOW: Duration = Duration::from_millis(250);
/// ...and this many requests started during the rests; fewer means the foreground is light,
/// and expiry may take its highest share.
const MIN_REST_REQUESTS: u64 = 32;

/// One unit of work and the rest after it, with the requests started during each.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sample {
    pub(super) work: Duration,
    pub(super) work_requests: u64,
    pub(super) rest: Duration,
    pub(super) rest_requests: u64,
}

#[derive(Debug)]
pub(super) struct Pacer {
    duty: f64,
    /// The samples since the last judgement, summed.
    window: Sample,
    units: u32,
}

impl Default for Pacer {
    fn default() -> Self {
        Self { duty: START_DUTY, window: Sample::default(), units: 0 }
    }
}

impl Pacer {
    /// The rest after a unit of work that took `work`, so that work takes `duty` of the time.
    pub(super) fn rest_after(&self, work: Duration) -> Duration {
        work.mul_f64(1.0 / self.duty - 1.0).min(MAX_REST)
    }

    /// The rest after a unit that must not wait for the pacer's judgement: at most what the
    /// highest share allows (a secret lease's revocation, see the lease module).
    pub(super) fn rest_after_urgent(&self, work: Duration) -> Duration {
        self.rest_after(work).min(work.mul_f64(1.0 / MAX_DUTY - 1.0))
    }

    #[cfg(test)]
    pub(super) fn duty(&self) -> f64 {
        self.duty
    }

    /// Adds a sample; once the window holds enough, judges it and adapts the share.
    pub(super) fn record(&mut self, s: Sample) {
        let w = &mut self.window;
        w.work += s.work;
        w.work_requests += s.work_requests;
        w.rest += s.rest;
        w.rest_requests += s.rest_requests;
        self.units += 1;
        if self.units < WINDOW_UNITS || w.work + w.rest < WINDOW {
            return;
        }
        let w = std::mem::take(&mut self.window);
        self.units = 0;
        let cost = cost(&w);
        let before = self.duty;
        self.duty = match cost {
            // Too few requests to tell: the foreground is light.
            None => (self.duty * 2.0).min(MAX_DUTY),
            Some(c) if c > TARGET_COST => (self.duty / 2.0).max(MIN_DUTY),
            Some(c) if c < TARGET_COST / 2.0 => (self.duty * 1.25).min(MAX_DUTY),
            Some(_) => self.duty,
        };
        tracing::debug!(cost, share = before, next_share = self.duty, "expiry pacing");
    }
}

/// The share of the foreground's request rate that the window's work cost: its share of the
/// time times how much slower requests started while it ran. `None` when the rests saw too
/// few requests to tell.
fn cost(w: &Sample) -> Option<f64> {
    if w.rest_requests < MIN_REST_REQUESTS || w.rest.is_zero() || w.work.is_zero() {
        return None;
    }
    let rest_rate = w.rest_requests as f64 / w.rest.as_secs_f64();
    let work_rate = w.work_requests as f64 / w.work.as_secs_f64();
    let slowdown = (1.0 - work_rate / rest_rate).max(0.0);
    let share = w.work.as_secs_f64() / (w.work + w.rest).as_secs_f64();
    Some(share * slowdown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(work_ms: u64, work_requests: u64, rest_ms: u64, rest_requests: u64) -> Sample {
        Sample {
            work: Duration::from_millis(work_ms),
            work_requests,
            rest: Duration::from_millis(rest_ms),
            rest_requests,
        }
    }

    /// Feeds whole windows of the samples `f` makes from the pacer's rest.
    fn run(p: &mut Pacer, windows: usize, f: impl Fn(Duration) -> Sample) {
        for _ in 0..windows * WINDOW_UNITS as usize * 4 {
            let rest = p.rest_after(Duration::from_millis(2));
            p.record(f(rest));
        }
    }

    #[test]
    fn work_that_stalls_requests_gets_less_time_down_to_the_floor() {
        let mut p = Pacer::default();
        // Requests stop entirely while expiry works.
        run(&mut p, 20, |rest| sample(2, 0, rest.as_millis() as u64, rest.as_millis() as u64 * 20));
        assert_eq!(p.duty(), MIN_DUTY);
        assert_eq!(p.rest_after(Duration::from_millis(2)).as_micros().div_ceil(1000), 126);
        assert_eq!(p.rest_after(Duration::from_secs(1)), MAX_REST);
        // An urgent unit still gets the highest share.
        assert_eq!(p.rest_after_urgent(Duration::from_millis(2)), Duration::from_millis(6));
    }

    #[test]
    fn work_that_costs_requests_nothing_gets_up_to_the_ceiling() {
        let mut p = Pacer::default();
        run(&mut p, 40, |rest| {
            sample(2, 40, rest.as_millis() as u64, rest.as_millis() as u64 * 20)
        });
        assert_eq!(p.duty(), MAX_DUTY);
        assert_eq!(p.rest_after(Duration::from_millis(2)).as_micros().div_ceil(1000), 6);
    }

    #[test]
    fn a_light_foreground_lets_expiry_take_its_highest_share() {
        let mut p = Pacer::default();
        run(&mut p, 10, |rest| sample(2, 0, rest.as_millis() as u64, 0));
        assert_eq!(p.duty(), MAX_DUTY);
    }

    #[test]
    fn the_share_settles_where_the_cost_meets_the_target() {
        // Requests start at half their rate while expiry works: the cost is half its share,
        // so the share settles between 2 and 4 times the target.
        let mut p = Pacer::default();
        run(&mut p, 60, |rest| {
            sample(2, 20, rest.as_millis() as u64, rest.as_millis() as u64 * 20)
        });
        assert!(p.duty() <= 2.0 * TARGET_COST * 1.25 + 1e-9, "{}", p.duty());
        assert!(p.duty() >= TARGET_COST - 1e-9, "{}", p.duty());
    }

    #[test]
    fn the_cost_is_the_share_of_time_times_the_slowdown() {
        let c = cost(&sample(100, 500, 300, 3000)).expect("enough requests");
        assert!((c - 0.25 * 0.5).abs() < 1e-9, "{c}");
        assert_eq!(cost(&sample(100, 0, 300, 10)), None);
        assert_eq!(cost(&sample(100, 2000, 300, 3000)), Some(0.0));
    }
}
