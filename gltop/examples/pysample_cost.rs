//! What `gltop --sample` costs a Python greenlet switch loop (issue 18), side by side in one
//! run: unattached, and with the Python sampler attached at 99, 999 and 10,000 Hz (the
//! cpu-clock program that reads the current greenlet through the DTV, and sched_switch;
//! nothing in the switch). The target is `python3 gltop/tests/python/switch_loop.py`, asked
//! for a fixed number of switches per measurement; its thread CPU time per switch (a
//! sample's interrupt is charged to the thread it stops) is compared. Variants run in turns,
//! `--rounds` times, and the least of each is kept: other load only ever adds time.
//!
//! `cargo run --release -p gltop --example pysample_cost [-- --rounds N] [--python PATH]`
//! (needs root and a Python with greenlet 3).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use gltop::loader::pygreenlet;
use gltop::loader::pysample::PySampler;
use gltop::loader::sample::SampleOptions;

fn main() {
    let mut rounds = 7usize;
    let mut python = "python3".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--rounds", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => {
                rounds = n.parse().expect("checked")
            }
            ("--python", Some(p)) => python = p,
            _ => {
                eprintln!("pysample_cost: arguments are --rounds N and --python PATH");
                std::process::exit(2)
            }
        }
    }
    if std::env::var_os("GLTOP_DEBUG").is_none() {
        libbpf_rs::set_print(None);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/switch_loop.py");
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let pid = child.id() as i32;
    let mut input = child.stdin.take().expect("piped");
    let mut output = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut next = || {
        output
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("{python} {script} stopped"))
    };
    assert_eq!(next(), "ready");
    let mut run = |n: u64| -> u64 {
        writeln!(input, "{n}").expect("write to the loop");
        input.flush().expect("flush");
        next().parse().expect("thread CPU ns")
    };
    // About a fifth of a second of switching per measurement, unattached.
    run(20_000);
    let probe = 200_000;
    let ns = run(probe);
    let n = (probe as f64 * 0.2e9 / ns.max(1) as f64) as u64;
    let layout = pygreenlet::detect(pid)
        .unwrap_or_else(|e| panic!("cannot sample {python}: {e}"))
        .unwrap_or_else(|| panic!("{python} is not seen as a Python process"));
    let variants: [Option<u32>; 4] = [None, Some(99), Some(999), Some(10_000)];
    let mut per_switch: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, &v) in variants.iter().enumerate() {
            let held = v.map(|hz| {
                let opts = SampleOptions {
                    hz,
                    ..SampleOptions::default()
                };
                PySampler::attach(pid, layout.clone(), &opts)
                    .unwrap_or_else(|e| panic!("cannot attach: {e}"))
            });
            run(n / 20);
            let ns = run(n);
            drop(held);
            per_switch[i].push(ns as f64 / (2 * n) as f64);
        }
    }
    drop(input);
    let _ = child.wait();
    let best: Vec<f64> = per_switch
        .iter()
        .map(|v| v.iter().copied().fold(f64::INFINITY, f64::min))
        .collect();
    let base = best[0];
    println!(
        "What --sample costs a Python greenlet switch loop ({python}, {} switches per \
         measurement, least of {rounds} rounds):",
        2 * n
    );
    println!(
        "{:<22} {:>14} {:>14} {:>12}",
        "", "CPU/switch", "switches/s", "extra CPU"
    );
    for (v, &b) in variants.iter().zip(&best) {
        println!(
            "{:<22} {:>12.1}ns {:>14.0} {:>11.2}%",
            v.map_or("not attached".to_string(), |hz| format!(
                "--sample --hz {hz}"
            )),
            b,
            1e9 / b,
            (b / base - 1.0) * 100.0
        );
    }
    let per_sample_ns = (best[3] / base - 1.0) * 1e9 / 10_000.0;
    println!(
        "one sample costs the thread {per_sample_ns:.0} ns (from 10 kHz): at 99 Hz {:.3}% of a \
         busy CPU; nothing is added to a switch",
        per_sample_ns * 99.0 / 1e7
    );
}
