//! A million live greenlets: creates `--count` greenlets (default 1,000,000), switches into
//! each once so that it is started and suspended on its own stack, then prints the time taken
//! and the resident memory per greenlet (the growth of `VmRSS` divided by the count). Then it
//! proves every one of them is still alive and well: half are resumed (each must answer with
//! the value it was sent, doubled), the other half killed (each must die of the
//! `GreenletExit`).
//!
//! ```text
//! cargo run --release --example million                    # 1,000,000 greenlets
//! cargo run --release --example million -- --count 20000 --stack-size 65536 --json
//! ```
//!
//! Exit status: 0 when every greenlet was created, resumed or killed as expected; 1 when a
//! stack could not be allocated or a greenlet misbehaved; 2 for bad arguments.

use std::fs;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use greenlet::{getcurrent, Error, Greenlet, GreenletExit, Value, DEFAULT_STACK_SIZE};

/// The command line (parsed by hand: the runtime's examples use no CLI crate).
struct Args {
    /// How many greenlets to keep alive at once.
    count: u64,
    /// Stack size of each greenlet in bytes.
    stack_size: usize,
    /// Print one JSON object instead of text.
    json: bool,
}

/// `--help`: `{stack}` stands for the runtime's default stack size.
const HELP: &str = "\
Create a million suspended greenlets; print time and memory per greenlet

Usage: million [OPTIONS]

Options:
      --count <COUNT>            How many greenlets to keep alive at once [default: 1000000]
      --stack-size <STACK_SIZE>  Stack size of each greenlet in bytes [default: {stack}]
      --json                     Print one JSON object instead of text
  -h, --help                     Print help
";

impl Args {
    /// Parses `args` (without the program name); `Ok(None)` for `--help`.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
        let mut parsed = Args {
            count: 1_000_000,
            stack_size: DEFAULT_STACK_SIZE,
            json: false,
        };
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_string(), Some(value.to_string()))
                }
                _ => (arg, None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("a value is required for '{name}'"))
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(None),
                "--json" if inline.is_none() && parsed.json => {
                    return Err("the argument '--json' cannot be used multiple times".into())
                }
                "--json" if inline.is_none() => parsed.json = true,
                "--count" => parsed.count = number(&flag, &value(&flag)?)?,
                "--stack-size" => parsed.stack_size = number(&flag, &value(&flag)?)?,
                other => return Err(format!("unexpected argument '{other}' found")),
            }
        }
        Ok(Some(parsed))
    }
}

/// `text` as a non-negative whole number, or an error naming `flag`.
fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse().map_err(|_| {
        format!("invalid value '{text}' for '{flag}': not a non-negative whole number")
    })
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmPTE`), 0 where there is none.
fn status_kib(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The number of kernel mappings of this process.
fn mappings() -> usize {
    fs::read_to_string("/proc/self/maps")
        .map(|maps| maps.lines().count())
        .unwrap_or(0)
}

fn max_map_count() -> String {
    fs::read_to_string("/proc/sys/vm/max_map_count")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// The body of every greenlet: park in the parent, then answer what it is sent, doubled.
fn body(_first: Value) -> Result<u64, Error> {
    let parent = getcurrent().parent().expect("a greenlet has a parent");
    let sent = parent.switch(())?;
    drop(parent);
    let n = sent
        .downcast::<u64>()
        .map_err(|_| Error::msg("expected a u64"))?;
    Ok(n * 2)
}

struct Figures {
    created: u64,
    create_time: Duration,
    rss_kib: u64,
    pte_kib: u64,
    maps_before: usize,
    maps_after: usize,
    check_time: Duration,
}

fn run(args: &Args) -> Result<Figures, String> {
    getcurrent(); // the thread state and main greenlet exist before the baseline
    let rss_before = status_kib("VmRSS");
    let pte_before = status_kib("VmPTE");
    let maps_before = mappings();

    let start = Instant::now();
    let mut alive = Vec::new();
    for i in 0..args.count {
        let g = Greenlet::builder().stack_size(args.stack_size).build(body);
        if let Err(e) = g.switch(()) {
            let message = format!(
                "greenlet {} of {} could not start: {e} ({} alive, {} kernel mappings, \
                 vm.max_map_count = {})",
                i + 1,
                args.count,
                alive.len(),
                mappings(),
                max_map_count()
            );
            drop(alive); // kills the ones already alive
            return Err(message);
        }
        alive.push(g);
    }
    let create_time = start.elapsed();
    let rss_kib = status_kib("VmRSS").saturating_sub(rss_before);
    let pte_kib = status_kib("VmPTE").saturating_sub(pte_before);
    let maps_after = mappings();

    // Every greenlet is alive: resume the even ones, kill the odd ones.
    let start = Instant::now();
    let mut wrong = Vec::new();
    for (i, g) in (0_u64..).zip(&alive) {
        let ok = if i % 2 == 0 {
            matches!(g.switch(i).map(|v| v.downcast::<u64>()), Ok(Ok(n)) if n == i * 2)
        } else {
            matches!(g.kill().map(|v| v.is::<GreenletExit>()), Ok(true))
        };
        if !ok || !g.is_dead() {
            wrong.push(i);
        }
    }
    let check_time = start.elapsed();
    if !wrong.is_empty() {
        return Err(format!(
            "{} of {} greenlets did not resume or die as expected (first: #{})",
            wrong.len(),
            args.count,
            wrong[0]
        ));
    }
    Ok(Figures {
        created: args.count,
        create_time,
        rss_kib,
        pte_kib,
        maps_before,
        maps_after,
        check_time,
    })
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!(
                "{}",
                HELP.replace("{stack}", &DEFAULT_STACK_SIZE.to_string())
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("million: {e}");
            return ExitCode::from(2);
        }
    };
    if args.count == 0 {
        eprintln!("million: --count must be at least 1");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(f) => {
            let n = f.created as f64;
            let kib_each = f.rss_kib as f64 / n;
            let create_ns = f.create_time.as_nanos() as f64 / n;
            let check_ns = f.check_time.as_nanos() as f64 / n;
            if args.json {
                println!(
                    "{{\"case\": \"live\", \"count\": {}, \"stack_size\": {}, \
                     \"kib_per_greenlet\": {:.3}, \"rss_delta_kib\": {}, \"pte_delta_kib\": {}, \
                     \"create_ns_per_greenlet\": {:.1}, \"resume_or_kill_ns_per_greenlet\": {:.1}, \
                     \"create_seconds\": {:.3}, \"mappings_before\": {}, \"mappings_after\": {}}}",
                    f.created,
                    args.stack_size,
                    kib_each,
                    f.rss_kib,
                    f.pte_kib,
                    create_ns,
                    check_ns,
                    f.create_time.as_secs_f64(),
                    f.maps_before,
                    f.maps_after
                );
            } else {
                println!(
                    "million: {} greenlets alive ({} byte stacks), created and started in {:.3} s \
                     ({:.0} ns each)",
                    f.created,
                    args.stack_size,
                    f.create_time.as_secs_f64(),
                    create_ns
                );
                println!(
                    "million: resident memory {:.2} KiB per greenlet (VmRSS +{} KiB; page tables \
                     VmPTE +{} KiB, {:.2} KiB each, not in RSS)",
                    kib_each,
                    f.rss_kib,
                    f.pte_kib,
                    f.pte_kib as f64 / n
                );
                println!(
                    "million: kernel mappings {} -> {}; all resumed or killed as expected in \
                     {:.3} s ({:.0} ns each)",
                    f.maps_before,
                    f.maps_after,
                    f.check_time.as_secs_f64(),
                    check_ns
                );
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("million: {message}");
            ExitCode::FAILURE
        }
    }
}
