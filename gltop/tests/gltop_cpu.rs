//! On-CPU time: a greenlet that computes a known time per slice shows that time within 10%,
//! in its histogram bucket, and ranks first.
//!
//! On-CPU time is switch-in to the next switch-out on the same thread (wall time as the
//! thread's current greenlet), so a thread that loses its CPU to another process mid-slice
//! lengthens the slice. The reference is therefore what the greenlet timed of its own
//! slices from inside (which preemption lengthens the same way), and the spin sets a floor.

mod support;

use std::time::Duration;

use gltop::loader::rates::bucket_of;
use support::*;

#[test]
fn a_greenlet_spinning_10ms_per_slice_shows_10ms_slices_and_ranks_first() {
    if !bpf_or_skip("a_greenlet_spinning_10ms_per_slice_shows_10ms_slices_and_ranks_first") {
        return;
    }
    const SPIN_NS: u64 = 10_000_000;
    // The hog, the first of 4 workers, gets 100 slices: its start, 97 of the 194 round robin
    // switch steps (its own, and the passes of the fourth worker to it), the flush and its
    // finish.
    const SLICES: u64 = 100;
    let mut t = target(&[
        "--threads",
        "1",
        "--greenlets",
        "4",
        "--switches",
        "194",
        "--throws",
        "0",
        "--kills",
        "0",
        "--spin-us",
        "10000",
    ]);
    let mut g = gltop_json(t.pid(), &["-d", "0.5"]);
    assert!(t
        .wait_for(Duration::from_secs(120))
        .is_some_and(|s| s.success()));
    assert!(g
        .wait_for(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    let report = report_of(&mut t);
    let last = &merged(&json_lines(&g.stdout_text()));

    let mut by_cpu: Vec<&serde_json::Value> =
        last["greenlets"].as_array().unwrap().iter().collect();
    by_cpu.sort_by_key(|g| std::cmp::Reverse(g["on_cpu_ns"].as_u64().unwrap()));
    // The hog, the spinning worker, comes first.
    {
        let hog = by_cpu[0];
        let [spun] = &report.spun[..] else {
            panic!("one spinning worker: {:?}", report.spun)
        };
        assert_eq!(hog["id"], spun.id, "the hog ranks first: {by_cpu:?}");
        let name = &report.greenlet(spun.id).name;
        assert_eq!(name, "worker");
        let slices = hog["slices"].as_u64().unwrap();
        assert_eq!(slices, SLICES, "one slice per transfer into it");
        assert_eq!(report.inbound(None)[&spun.id], SLICES, "transfers into it");
        let mean = hog["on_cpu_ns"].as_u64().unwrap() / slices;
        assert_eq!(spun.slices, SLICES);
        let own = spun.ns / SLICES;
        assert!(own >= SPIN_NS, "the greenlet spun {own} ns per slice");
        let err = (mean as f64 - own as f64).abs() / own as f64;
        assert!(
            err < 0.10,
            "{name}: mean slice {mean} ns, timed from inside {own} ns"
        );
        assert!(mean >= SPIN_NS, "{name}: mean slice {mean} ns");
        let max = hog["max_slice_ns"].as_u64().unwrap();
        assert!(max >= SPIN_NS, "{name}: longest slice {max} ns");
        // No slice is shorter than the spin: none below the 10 ms bucket ([8.4, 16.8) ms).
        let hist = hog["slice_hist"].as_array().unwrap();
        let total: u64 = hist.iter().map(|b| b[1].as_u64().unwrap()).sum();
        let short: u64 = hist
            .iter()
            .filter(|b| bucket_of(b[0].as_u64().unwrap()) < bucket_of(SPIN_NS))
            .map(|b| b[1].as_u64().unwrap())
            .sum();
        assert_eq!((total, short), (SLICES, 0), "{name}: {hist:?}");
    }
    // Everyone else switches on at once: far less time.
    let second = by_cpu[1]["on_cpu_ns"].as_u64().unwrap();
    assert!(
        second < SLICES * SPIN_NS / 10,
        "the second greenlet ran {second} ns"
    );
}
