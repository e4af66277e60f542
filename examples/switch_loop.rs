//! Runs one benchmark case for a given number of operations, for instruction counting:
//! `valgrind --tool=callgrind target/release/examples/switch_loop CASE N`.
//!
//! The cases are the criterion cases of `benches/switch.rs` (the same code, from
//! `benches/workloads`). `benches/callgrind.py` runs each case for N and 2N operations and
//! divides the difference by N, so setup and teardown cancel out.

#[path = "../benches/workloads/mod.rs"]
mod workloads;

use std::process::ExitCode;

/// Bad arguments: what is wrong and the usage, on one line; status 2.
fn usage(problem: &str) -> ExitCode {
    let names: Vec<&str> = workloads::CASES.iter().map(|(name, _)| *name).collect();
    eprintln!(
        "switch_loop: {problem}; usage: switch_loop CASE COUNT  (CASE: {})",
        names.join(", ")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [case, count] = args.as_slice() else {
        return usage(&format!("2 arguments expected, {} given", args.len()));
    };
    let Ok(count) = count.parse::<u64>() else {
        eprintln!("switch_loop: COUNT must be a non-negative integer, got {count:?}");
        return ExitCode::from(2);
    };
    match workloads::run_case(case, count) {
        Some(elapsed) => {
            let per_op = elapsed.as_secs_f64() * 1e9 / count.max(1) as f64;
            println!("{case} {count} {per_op:.2} ns/op");
            ExitCode::SUCCESS
        }
        None => usage(&format!("unknown case {case:?}")),
    }
}
