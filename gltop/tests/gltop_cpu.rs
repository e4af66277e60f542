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
    let mut t = target(&[
        "--threads",
        "1",
        "--greenlets",
        "4",
        "--rounds",
        "100",
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
    let report: serde_json::Value = serde_json::from_str(t.stdout_text().trim()).unwrap();
    let last = &merged(&json_lines(&g.stdout_text()));
    let names = report["names"].as_object().unwrap();

    let mut by_cpu: Vec<&serde_json::Value> =
        last["greenlets"].as_array().unwrap().iter().collect();
    by_cpu.sort_by_key(|g| std::cmp::Reverse(g["on_cpu_ns"].as_u64().unwrap()));
    // The hog, t0-0, comes first.
    {
        let hog = by_cpu[0];
        let name = names[&hog["id"].to_string()].as_str().unwrap();
        assert_eq!(name, "t0-0", "the hog ranks first: {by_cpu:?}");
        let slices = hog["slices"].as_u64().unwrap();
        assert_eq!(slices, 100, "one slice per round");
        let mean = hog["on_cpu_ns"].as_u64().unwrap() / slices;
        let spun = &report["spun"][0];
        assert_eq!(spun[0], hog["id"], "{report}");
        assert_eq!(spun[1], 100);
        let own = spun[2].as_u64().unwrap() / 100;
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
        assert_eq!((total, short), (100, 0), "{name}: {hist:?}");
    }
    // Everyone else switches on at once: far less time.
    let second = by_cpu[1]["on_cpu_ns"].as_u64().unwrap();
    assert!(
        second < 100 * SPIN_NS / 10,
        "the second greenlet ran {second} ns"
    );
}
