//! Pure arithmetic on snapshots: deltas, per-second rates, CPU shares, the cost of tracing,
//! and slice histograms. Nothing here reads the kernel or the clock.

use super::model::{GreenletStats, Snapshot, HIST_BUCKETS};

/// The increase of a cumulative counter; 0 if it went backwards (a greenlet record made anew:
/// its first record was lost to a full map).
pub fn delta(prev: u64, cur: u64) -> u64 {
    cur.saturating_sub(prev)
}

/// Per-second rate of a counter that went from `prev` to `cur` in `dt_ns` nanoseconds.
pub fn per_second(prev: u64, cur: u64, dt_ns: u64) -> f64 {
    if dt_ns == 0 {
        return 0.0;
    }
    delta(prev, cur) as f64 * 1e9 / dt_ns as f64
}

/// Share of one CPU (1.0 = a whole CPU) that `busy_ns` of work in `dt_ns` of wall time is.
pub fn cpu_share(busy_ns: u64, dt_ns: u64) -> f64 {
    if dt_ns == 0 {
        return 0.0;
    }
    busy_ns as f64 / dt_ns as f64
}

/// What tracing costs the target, as a share of one CPU: probe hits per second times the
/// cost of one hit.
pub fn tracing_cost(hits_per_s: f64, per_hit_ns: f64) -> f64 {
    hits_per_s * per_hit_ns / 1e9
}

/// The cost of one probe hit from a calibration run: `n` hits took `attached_ns`, the same
/// loop without a tracer took `detached_ns`. `None` if the run shows no cost (too noisy).
pub fn per_hit_ns(detached_ns: u64, attached_ns: u64, n: u64) -> Option<f64> {
    if n == 0 || attached_ns <= detached_ns {
        return None;
    }
    Some((attached_ns - detached_ns) as f64 / n as f64)
}

/// The blocking detector that runs beside exact mode's probes, as the cost line counts it:
/// its cpu-clock samples of the target per second, times what one costs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DetectorCost {
    /// Nanoseconds one sample costs the target, if measured.
    pub per_sample_ns: Option<f64>,
    /// Samples of the target per second over the last interval (two reads needed).
    pub samples_per_s: Option<f64>,
    /// The last read: (samples since attach, CLOCK_MONOTONIC ns).
    last: Option<(u64, u64)>,
}

impl DetectorCost {
    /// A detector whose samples cost `per_sample_ns` each (None: not measured).
    pub fn new(per_sample_ns: Option<f64>) -> DetectorCost {
        DetectorCost {
            per_sample_ns,
            ..DetectorCost::default()
        }
    }

    /// Takes a read of the detector's sample count (since attach) made at `at_ns`.
    pub fn read(&mut self, samples: u64, at_ns: u64) {
        if let Some((s0, t0)) = self.last {
            if at_ns > t0 {
                self.samples_per_s = Some(per_second(s0, samples, at_ns - t0));
            }
        }
        self.last = Some((samples, at_ns));
    }

    /// Its share of one CPU, once both the rate and the per-sample cost are known.
    pub fn cpu_share(&self) -> Option<f64> {
        Some(tracing_cost(self.samples_per_s?, self.per_sample_ns?))
    }
}

/// Rates of one greenlet over an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GreenletRates {
    /// Switches into it per second.
    pub switches_per_s: f64,
    /// Throws into or out of it per second.
    pub throws_per_s: f64,
    /// Share of a CPU it ran (time as its thread's current greenlet / wall time).
    pub cpu_share: f64,
}

/// Two snapshots of the same tracer, `prev` taken before `cur`.
#[derive(Clone, Copy, Debug)]
pub struct Interval<'a> {
    /// The earlier snapshot.
    pub prev: &'a Snapshot,
    /// The later snapshot.
    pub cur: &'a Snapshot,
}

impl<'a> Interval<'a> {
    /// Wall time between the two snapshots.
    pub fn dt_ns(&self) -> u64 {
        self.cur.at_ns.saturating_sub(self.prev.at_ns)
    }

    /// Switches per second, all threads.
    pub fn switches_per_s(&self) -> f64 {
        per_second(
            self.prev.totals.switches,
            self.cur.totals.switches,
            self.dt_ns(),
        )
    }

    /// Throws per second, all threads.
    pub fn throws_per_s(&self) -> f64 {
        per_second(
            self.prev.totals.throws,
            self.cur.totals.throws,
            self.dt_ns(),
        )
    }

    /// Probe hits per second, all probes.
    pub fn hits_per_s(&self) -> f64 {
        per_second(
            self.prev.totals.hits(),
            self.cur.totals.hits(),
            self.dt_ns(),
        )
    }

    /// Rates of greenlet `g` of `cur`. A greenlet absent from `prev` counts from zero: it was
    /// created (or first seen) during the interval.
    ///
    /// `None` when the previous snapshot has no record of a greenlet that already existed
    /// then (it predates the attach and was first seen during the interval, or its first
    /// record was lost to a full map): no rate can be told. A greenlet born during the
    /// interval counts from zero.
    pub fn greenlet(&self, g: &GreenletStats) -> Option<GreenletRates> {
        let dt = self.dt_ns();
        let before = self.prev.greenlet(g.key());
        if before.is_none() && g.created_ns.is_none_or(|born| born <= self.prev.at_ns) {
            return None;
        }
        let prev = |f: fn(&GreenletStats) -> u64| before.map_or(0, f);
        let on_cpu_before = before.map_or(0, |p| p.on_cpu_at(self.prev.at_ns));
        Some(GreenletRates {
            switches_per_s: per_second(prev(|p| p.switches_in), g.switches_in, dt),
            throws_per_s: per_second(
                prev(|p| p.throws_in + p.throws_out),
                g.throws_in + g.throws_out,
                dt,
            ),
            cpu_share: cpu_share(delta(on_cpu_before, g.on_cpu_at(self.cur.at_ns)), dt),
        })
    }
}

/// The range of slice lengths bucket `i` of a histogram counts: `[lo, hi)` nanoseconds,
/// `hi == None` for the last, open-ended bucket.
pub fn bucket_range(i: usize) -> (u64, Option<u64>) {
    let lo = if i == 0 { 0 } else { 1u64 << i };
    let hi = (i + 1 < HIST_BUCKETS).then(|| 1u64 << (i + 1));
    (lo, hi)
}

/// The bucket a slice of `ns` nanoseconds falls in (what the BPF program computes).
pub fn bucket_of(ns: u64) -> usize {
    let log2 = 63 - (ns | 1).leading_zeros() as usize;
    log2.min(HIST_BUCKETS - 1)
}

/// An upper bound of the `q`-quantile (0..=1) of the slices a histogram counts: the upper
/// edge of the bucket where the cumulative count reaches `q`. `None` for an empty histogram.
pub fn quantile_upper(hist: &[u64], q: f64) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let want = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, &n) in hist.iter().enumerate() {
        seen += n;
        if seen >= want {
            let (lo, hi) = bucket_range(i);
            return Some(hi.unwrap_or(lo));
        }
    }
    None
}

/// The buckets worth showing: from the first to the last non-empty one.
pub fn nonempty_span(hist: &[u64]) -> Option<std::ops::RangeInclusive<usize>> {
    let first = hist.iter().position(|&n| n != 0)?;
    let last = hist.iter().rposition(|&n| n != 0)?;
    Some(first..=last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detectors_cost_is_its_sample_rate_times_one_samples_cost() {
        let mut d = DetectorCost::new(Some(20_000.0));
        assert_eq!(d.cpu_share(), None, "no rate before two reads");
        d.read(1_000, 5_000_000_000);
        assert_eq!(d.samples_per_s, None);
        d.read(1_099, 6_000_000_000);
        assert_eq!(d.samples_per_s, Some(99.0));
        let share = d.cpu_share().unwrap();
        assert!((share - 99.0 * 20e-6).abs() < 1e-12, "{share}");
        // A read at the same instant keeps the last rate.
        d.read(1_099, 6_000_000_000);
        assert_eq!(d.samples_per_s, Some(99.0));
        let mut unmeasured = DetectorCost::new(None);
        unmeasured.read(0, 0);
        unmeasured.read(50, 500_000_000);
        assert_eq!(unmeasured.samples_per_s, Some(100.0));
        assert_eq!(unmeasured.cpu_share(), None);
    }
    use crate::loader::model::{State, Totals};

    fn greenlet(id: u64) -> GreenletStats {
        GreenletStats {
            id,
            pid: 0,
            name: String::new(),
            seen_new: true,
            parent: Some(1),
            state: State::Suspended,
            ended: false,
            outcome: None,
            tid: 1,
            created_ns: None,
            dead_ns: None,
            running_since_ns: None,
            switches_in: 0,
            switches_out: 0,
            throws_in: 0,
            throws_out: 0,
            on_cpu_ns: 0,
            max_slice_ns: 0,
            slices: 0,
            hist: vec![0; HIST_BUCKETS].into(),
        }
    }

    fn snap(at_ns: u64, switches: u64, greenlets: Vec<GreenletStats>) -> Snapshot {
        Snapshot {
            at_ns,
            totals: Totals {
                switches,
                ..Default::default()
            },
            greenlets,
            ..Default::default()
        }
    }

    #[test]
    fn rates_and_deltas() {
        assert_eq!(per_second(100, 600, 500_000_000), 1000.0);
        assert_eq!(
            per_second(600, 100, 1_000_000_000),
            0.0,
            "a reset counts from zero"
        );
        assert_eq!(per_second(0, 10, 0), 0.0);
        assert_eq!(delta(3, 10), 7);
        assert_eq!(cpu_share(250_000_000, 1_000_000_000), 0.25);
        assert_eq!(cpu_share(1, 0), 0.0);
    }

    #[test]
    fn tracing_cost_is_hits_times_cost() {
        // 1 million hits/s at 450 ns each keep 45% of a CPU busy.
        assert!((tracing_cost(1e6, 450.0) - 0.45).abs() < 1e-12);
        assert_eq!(per_hit_ns(1_000, 451_000, 1_000), Some(450.0));
        assert_eq!(per_hit_ns(1_000, 900, 1_000), None);
        assert_eq!(per_hit_ns(1_000, 2_000, 0), None);
    }

    #[test]
    fn interval_rates_include_the_running_slice() {
        let mut a = greenlet(5);
        a.switches_in = 10;
        a.on_cpu_ns = 1_000;
        a.running_since_ns = Some(1_500);
        let mut b = a.clone();
        b.switches_in = 110;
        b.on_cpu_ns = 1_000;
        b.running_since_ns = Some(1_500); // still in the same slice
        let prev = snap(2_000, 50, vec![a]);
        let cur = snap(1_000_002_000, 1_050, vec![b.clone()]);
        let iv = Interval {
            prev: &prev,
            cur: &cur,
        };
        assert_eq!(iv.dt_ns(), 1_000_000_000);
        assert_eq!(iv.switches_per_s(), 1000.0);
        let r = iv.greenlet(&b).unwrap();
        assert_eq!(r.switches_per_s, 100.0);
        // It ran the whole second: the slice in progress counts.
        assert!((r.cpu_share - 1.0).abs() < 1e-9, "{}", r.cpu_share);

        // A greenlet born during the interval counts from zero.
        let mut c = greenlet(6);
        c.switches_in = 4;
        c.throws_out = 2;
        c.on_cpu_ns = 500_000_000;
        c.created_ns = Some(500_000_000);
        let r = iv.greenlet(&c).unwrap();
        assert_eq!(
            (r.switches_per_s, r.throws_per_s, r.cpu_share),
            (4.0, 2.0, 0.5)
        );
        // One that existed before but has no previous record (born before attach and unseen,
        // or lost to a full map): no rate rather than its whole count in one interval.
        c.created_ns = Some(1_000);
        assert!(iv.greenlet(&c).is_none());
        c.created_ns = None;
        assert!(iv.greenlet(&c).is_none());
    }

    #[test]
    fn histogram_buckets_match_the_bpf_program() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 1);
        assert_eq!(bucket_of(3), 1);
        assert_eq!(bucket_of(1024), 10);
        assert_eq!(bucket_of(2047), 10);
        assert_eq!(bucket_of(u64::MAX), HIST_BUCKETS - 1);
        assert_eq!(bucket_range(0), (0, Some(2)));
        assert_eq!(bucket_range(10), (1024, Some(2048)));
        assert_eq!(bucket_range(HIST_BUCKETS - 1).1, None);
        for ns in [0u64, 1, 5, 999, 1 << 20, 123_456_789] {
            let (lo, hi) = bucket_range(bucket_of(ns));
            assert!(lo <= ns && hi.is_none_or(|h| ns < h), "{ns}");
        }
    }

    #[test]
    fn quantiles_and_spans() {
        let mut h = vec![0u64; HIST_BUCKETS];
        h[3] = 90; // [8, 16) ns
        h[20] = 10; // [1 Mi, 2 Mi) ns
        assert_eq!(quantile_upper(&h, 0.5), Some(16));
        assert_eq!(quantile_upper(&h, 0.9), Some(16));
        assert_eq!(quantile_upper(&h, 0.91), Some(2 << 20));
        assert_eq!(quantile_upper(&h, 1.0), Some(2 << 20));
        assert_eq!(nonempty_span(&h), Some(3..=20));
        assert_eq!(quantile_upper(&[0; 4], 0.5), None);
        assert_eq!(nonempty_span(&[0; 4]), None);
    }
}
