//! Kernel-side counts equal what `settrace` saw, exactly: totals, per-edge and per-greenlet
//! counts from `gltop --json`, against the target's own settrace report.

mod gltop_common;

use std::collections::BTreeMap;
use std::time::Duration;

use gltop_common::*;
use serde_json::Value;

/// Runs the target with `args` under `gltop --json` with `gltop_args`, both to completion;
/// returns (the target's settrace report, gltop's last line).
fn traced_run(args: &[&str], gltop_args: &[&str]) -> (Value, Value) {
    let mut t = target(args);
    let mut g = gltop_json(t.pid(), gltop_args);
    let t_status = t
        .wait_for(Duration::from_secs(240))
        .expect("the target finished");
    assert!(t_status.success(), "target failed: {}", t.stderr_text());
    let g_status = g
        .wait_for(Duration::from_secs(30))
        .expect("gltop exits after the target");
    let stderr = g.stderr_text();
    assert!(g_status.success(), "gltop failed: {stderr}");
    assert!(
        stderr.contains("exited"),
        "gltop says the target exited: {stderr}"
    );
    let report: Value = serde_json::from_str(t.stdout_text().trim()).expect("target report");
    let lines = json_lines(&g.stdout_text());
    let last = lines.last().cloned().expect("at least the final line");
    (report, last)
}

/// Compares gltop's last line with the target's report, exactly.
fn assert_exact(report: &Value, last: &Value) {
    let totals = &last["totals"];
    assert_eq!(totals["switches"], report["switches"], "switch totals");
    assert_eq!(totals["throws"], report["throws"], "throw totals");
    assert_eq!(totals["dropped"], 0, "nothing dropped: {totals}");
    assert_eq!(
        totals["late_greenlets"], 0,
        "every greenlet seen from `new`"
    );

    // Edges: the same set with the same counts.
    let want: BTreeMap<(u64, u64), (u64, u64)> = report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let n = |i: usize| e[i].as_u64().unwrap();
            ((n(0), n(1)), (n(2), n(3)))
        })
        .collect();
    let got: BTreeMap<(u64, u64), (u64, u64)> = last["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let n = |k: &str| e[k].as_u64().unwrap();
            ((n("origin"), n("target")), (n("switches"), n("throws")))
        })
        .collect();
    assert_eq!(got, want, "per-edge counts");

    // Per greenlet: in and out counts are the sums of its edges; names and creation seen.
    // id -> [switches in, switches out, throws in, throws out]
    let mut sums: BTreeMap<u64, [u64; 4]> = BTreeMap::new();
    for (&(origin, target), &(sw, th)) in &want {
        let t = sums.entry(target).or_default();
        t[0] += sw;
        t[2] += th;
        let o = sums.entry(origin).or_default();
        o[1] += sw;
        o[3] += th;
    }
    let names = report["names"].as_object().unwrap();
    assert_eq!(totals["greenlets_created"], names.len() as u64);
    for (id, name) in names {
        let id: u64 = id.parse().unwrap();
        let g = greenlet(last, id).unwrap_or_else(|| panic!("greenlet {id} recorded"));
        let [sw_in, sw_out, th_in, th_out] = sums.get(&id).copied().unwrap_or_default();
        assert_eq!(g["name"], *name, "name of {id}");
        assert_eq!(g["switches_in"], sw_in, "switches in of {id}");
        assert_eq!(g["switches_out"], sw_out, "switches out of {id}");
        assert_eq!(g["throws_in"], th_in, "throws in of {id}");
        assert_eq!(g["throws_out"], th_out, "throws out of {id}");
        assert_eq!(g["seen_new"], true);
        // Every completed slice began with a transfer in (or, for main, with creation).
        let slices = g["slices"].as_u64().unwrap();
        assert_eq!(
            slices,
            sw_out + th_out,
            "a slice ends at each transfer out of {id}"
        );
    }
}

#[test]
fn a_million_switches_on_four_threads_match_settrace_exactly() {
    if !bpf_or_skip("a_million_switches_on_four_threads_match_settrace_exactly") {
        return;
    }
    // 4 threads x 30,000 trips x 9 hops = 1,080,000 transfers, every 7th a throw.
    let (report, last) = traced_run(
        &[
            "--threads",
            "4",
            "--greenlets",
            "8",
            "--rounds",
            "30000",
            "--throw-every",
            "7",
        ],
        &["-d", "0.5"],
    );
    let transfers = report["switches"].as_u64().unwrap() + report["throws"].as_u64().unwrap();
    assert!(transfers >= 1_000_000, "{transfers} transfers");
    assert!(report["throws"].as_u64().unwrap() > 100_000);
    assert_exact(&report, &last);
    assert_eq!(last["attach"]["mode"], "uprobe");
    // Every ring greenlet returned; the main greenlets died with their threads.
    let outcomes = &last["totals"]["dead_by_outcome"];
    assert_eq!(outcomes["returned"], 32, "{outcomes}");
    assert_eq!(last["totals"]["greenlets_dead"], 36, "{}", last["totals"]);
}

#[test]
fn libbpf_usdt_attach_mode_counts_the_same() {
    if !bpf_or_skip("libbpf_usdt_attach_mode_counts_the_same") {
        return;
    }
    let (report, last) = traced_run(
        &[
            "--threads",
            "2",
            "--greenlets",
            "5",
            "--rounds",
            "2000",
            "--throw-every",
            "5",
        ],
        &["-d", "0.5", "--attach", "usdt"],
    );
    assert_eq!(last["attach"]["mode"], "usdt");
    assert_exact(&report, &last);
}

#[test]
fn totals_are_cumulative_and_rates_follow_the_interval() {
    if !bpf_or_skip("totals_are_cumulative_and_rates_follow_the_interval") {
        return;
    }
    let mut t = target(&[
        "--threads",
        "1",
        "--greenlets",
        "2",
        "--rounds",
        "60000",
        "--spin-us",
        "20",
    ]);
    let mut g = gltop_json(t.pid(), &["-d", "0.3"]);
    assert!(t.wait_for(Duration::from_secs(120)).is_some());
    assert!(g.wait_for(Duration::from_secs(30)).is_some());
    let lines = json_lines(&g.stdout_text());
    assert!(lines.len() >= 3, "several intervals: {}", lines.len());
    let switches: Vec<u64> = lines
        .iter()
        .map(|l| l["totals"]["switches"].as_u64().unwrap())
        .collect();
    assert!(
        switches.windows(2).all(|w| w[0] <= w[1]),
        "cumulative: {switches:?}"
    );
    for w in lines.windows(2) {
        let dt = w[1]["interval_s"].as_f64().unwrap();
        let d = w[1]["totals"]["switches"].as_u64().unwrap()
            - w[0]["totals"]["switches"].as_u64().unwrap();
        let rate = w[1]["rates"]["switches_per_s"].as_f64().unwrap();
        assert!(
            (rate * dt - d as f64).abs() <= 1.0 + 1e-6 * d as f64,
            "{rate} * {dt} vs {d}"
        );
    }
    let cost = &lines[1]["cost"];
    assert_eq!(cost["per_hit_ns"], 500.0);
    let hits = lines[1]["rates"]["probe_hits_per_s"].as_f64().unwrap();
    let share = cost["cpu_share"].as_f64().unwrap();
    assert!(
        (share - hits * 500e-9).abs() < 1e-9,
        "{share} vs {hits} hits/s"
    );
}
