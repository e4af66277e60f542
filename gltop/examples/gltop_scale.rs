//! gltop's own cost at scale (issue 14), part of `make bench` (step `scale`, needs root):
//! the CPU time and memory of the `gltop --listen` process refreshing every second, watching
//!
//! - one process with 100,000 live greenlets, and
//! - 10 processes with 10,000 live greenlets each (`-p` with ten PIDs),
//!
//! each greenlet known to gltop (created after the attach, started, then suspended), while
//! each target keeps switching among its greenlets at `--rate` switches per second in all. The
//! figures are gltop's user + system CPU time over the measured window (from
//! `/proc/PID/stat`) as a share of one core, its resident memory at the end and its peak
//! (`VmRSS`, `VmHWM`), and its refreshes as its own self-metrics give them (count, mean,
//! longest): a refresh must never take longer than the interval. One scrape at the end; what
//! a scrape costs comes on top, once per scrape interval.
//!
//! The targets are this program again (`--target N`): they wait for gltop's probes, create
//! their greenlets, say `ready` on stdout and switch until their stdin closes.
//!
//! `cargo run --release -p gltop --example gltop_scale [-- --seconds S] [--json]`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use greenlet::{getcurrent, Error, Greenlet, Value};

/// A target: waits for a tracer, creates `count` greenlets, then switches among them.
fn target(count: usize, rate: u64) -> ! {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !greenlet::probes::all_enabled() {
        if Instant::now() > deadline {
            eprintln!("gltop_scale target: no tracer came");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    getcurrent();
    let mut alive = Vec::with_capacity(count);
    for _ in 0..count {
        let g = Greenlet::builder()
            .stack_size(16 * 1024)
            .build(|_: Value| -> Result<(), Error> {
                let parent = getcurrent().parent().expect("a parent");
                loop {
                    parent.switch(())?;
                }
            });
        g.switch(()).expect("a greenlet starts");
        alive.push(g);
    }
    println!("ready");
    std::io::stdout().flush().ok();
    // Stop when stdin closes.
    std::thread::spawn(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        std::process::exit(0);
    });
    // Round trips into the greenlets in turn, `rate` switches a second in ticks of 10 ms.
    let per_tick = (rate / 2 / 100).max(1) as usize;
    let mut next = 0usize;
    let start = Instant::now();
    let mut ticks = 0u32;
    loop {
        for _ in 0..per_tick {
            alive[next].switch(()).expect("a greenlet answers");
            next = (next + 1) % alive.len();
        }
        ticks += 1;
        let due = start + Duration::from_millis(10) * ticks;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
}

/// `utime + stime` of `pid` in clock ticks, from `/proc/PID/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("gltop's stat");
    let after = &stat[stat.rfind(')').expect("a stat line") + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are indexes 11 and 12 after the name.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

/// One unlabelled-or-summed sample of a classic text exposition: the sum over its series.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn scrape(addr: &str) -> String {
    let mut r = ureq::get(format!("http://{addr}/metrics"))
        .call()
        .expect("a scrape");
    r.body_mut().read_to_string().expect("a body")
}

struct Case {
    label: String,
    processes: usize,
    greenlets: usize,
    cpu_pct: f64,
    rss_kib: u64,
    hwm_kib: u64,
    refreshes: f64,
    refresh_mean_ms: f64,
    refresh_max_ms: f64,
    live: f64,
    switches: f64,
    /// Events gltop could not record (a full map): 0 when the capacities fit.
    dropped: f64,
}

fn measure(processes: usize, per_process: usize, rate: u64, seconds: f64) -> Case {
    let me = std::env::current_exe().expect("this program");
    let mut targets: Vec<Child> = (0..processes)
        .map(|_| {
            Command::new(&me)
                .args([
                    "--target",
                    &per_process.to_string(),
                    "--rate",
                    &(rate / processes as u64).to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("a target")
        })
        .collect();
    let pids: Vec<String> = targets.iter().map(|c| c.id().to_string()).collect();
    let gltop = me
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("gltop"))
        .expect("the gltop binary next to the examples");
    let capacity = (per_process + per_process / 4 + 1024).to_string();
    // Each greenlet has two edges (main to it, it to main).
    let edges = (2 * per_process + per_process / 2 + 1024).to_string();
    let mut g = Command::new(&gltop)
        .args(["--listen", "127.0.0.1:0", "-d", "1", "--hit-cost-ns", "500"])
        .args(["--max-greenlets", &capacity, "--max-edges", &edges])
        .args(["-p", &pids.join(",")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", gltop.display()));
    let mut err = BufReader::new(g.stderr.take().expect("gltop's stderr"));
    let addr = loop {
        let mut line = String::new();
        if err.read_line(&mut line).expect("gltop's stderr") == 0 {
            panic!("gltop exited before serving");
        }
        if let Some(rest) = line.split("http://").nth(1) {
            break rest
                .split("/metrics")
                .next()
                .expect("an address")
                .to_string();
        }
    };
    // gltop's stderr is drained from here on, so that it never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    for t in &mut targets {
        let mut line = String::new();
        BufReader::new(t.stdout.as_mut().expect("a target's stdout"))
            .read_line(&mut line)
            .expect("a target's stdout");
        assert_eq!(line.trim(), "ready", "a target failed");
    }
    // Two refreshes take in the greenlets' creation, then the window starts.
    std::thread::sleep(Duration::from_millis(2500));
    let pid = g.id();
    let before = scrape(&addr);
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let c1 = cpu_ticks(pid);
    let wall = t0.elapsed().as_secs_f64();
    let rss_kib = status_kib(pid, "VmRSS");
    let hwm_kib = status_kib(pid, "VmHWM");
    let after = scrape(&addr);
    // `/proc/PID/stat` counts in USER_HZ, which Linux fixes at 100 for user space.
    let ticks_per_s = 100.0;
    let d = |name: &str| metric(&after, name) - metric(&before, name);
    let refreshes = d("gltop_refreshes_total");
    let case = Case {
        label: format!("{processes} x {per_process} greenlets"),
        processes,
        greenlets: per_process,
        cpu_pct: (c1 - c0) as f64 / ticks_per_s / wall * 100.0,
        rss_kib,
        hwm_kib,
        refreshes,
        refresh_mean_ms: d("gltop_refresh_seconds_total") / refreshes.max(1.0) * 1e3,
        refresh_max_ms: metric(&after, "gltop_refresh_max_seconds") * 1e3,
        live: metric(&after, "greenlet_live"),
        dropped: metric(&after, "gltop_dropped_total"),
        switches: d("greenlet_switches_total") / wall,
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = g.wait();
    for mut t in targets {
        drop(t.stdin.take());
        let _ = t.wait();
    }
    case
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut seconds = 20.0;
    let mut json = false;
    let mut target_count = None;
    let mut rate = 20_000u64;
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> f64 {
            args.next()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| *v > 0.0)
                .unwrap_or_else(|| {
                    eprintln!("gltop_scale: {what} takes a positive number");
                    std::process::exit(2)
                })
        };
        match a.as_str() {
            "--seconds" => seconds = num("--seconds"),
            "--target" => target_count = Some(num("--target") as usize),
            "--rate" => rate = num("--rate") as u64,
            "--json" => json = true,
            other => {
                eprintln!("gltop_scale: unexpected argument {other:?} (--seconds S, --json)");
                std::process::exit(2)
            }
        }
    }
    if let Some(n) = target_count {
        target(n, rate);
    }
    let cases = [
        measure(1, 100_000, rate, seconds),
        measure(10, 10_000, rate, seconds),
    ];
    if json {
        let items: Vec<String> = cases
            .iter()
            .map(|c| {
                format!(
                    "{{\"case\":\"{}\",\"processes\":{},\"greenlets_per_process\":{},\"cpu_pct\":{:.3},\"rss_kib\":{},\"hwm_kib\":{},\"refreshes\":{},\"refresh_mean_ms\":{:.3},\"refresh_max_ms\":{:.3},\"live\":{},\"switches_per_s\":{:.0},\"dropped\":{}}}",
                    c.label, c.processes, c.greenlets, c.cpu_pct, c.rss_kib, c.hwm_kib,
                    c.refreshes, c.refresh_mean_ms, c.refresh_max_ms, c.live, c.switches,
                    c.dropped
                )
            })
            .collect();
        println!(
            "{{\"seconds\":{seconds},\"interval_s\":1,\"rate\":{rate},\"cases\":[{}]}}",
            items.join(",")
        );
        return;
    }
    println!(
        "gltop --listen -d 1, its own cost over {seconds} s (targets switching {rate}/s in all):"
    );
    println!(
        "{:<26} {:>9} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "", "CPU", "RSS", "peak RSS", "refreshes", "mean refresh", "longest"
    );
    for c in &cases {
        println!(
            "{:<26} {:>8.2}% {:>7} MiB {:>7} MiB {:>10} {:>9.1} ms {:>9.1} ms   ({} live, {} dropped)",
            c.label,
            c.cpu_pct,
            c.rss_kib / 1024,
            c.hwm_kib / 1024,
            c.refreshes,
            c.refresh_mean_ms,
            c.refresh_max_ms,
            c.live,
            c.dropped
        );
    }
}
