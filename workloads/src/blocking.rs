//! The blocking scenarios of the `blocker` program, as functions that run on the calling
//! thread and report what they did, measured from inside.
//!
//! Included with `#[path]` by `blocker` (which prints the report as JSON for the gltop tests to
//! compare with) and by the root package's `tests/lint_blocking.rs` (which runs them
//! in-process under `greenlet::lint`'s checker); not part of the workloads library (see
//! `lib.rs`). It uses only `greenlet`, `nix` and `libc`, which both packages have.
//!
//! | scenario | greenlet | what it does |
//! | --- | --- | --- |
//! | [`split`] | `seventy`, `thirty` | ping-pong, 3.5 µs then 1.5 µs of CPU work per turn |
//! | [`spin`] | `spinner` | [`spin_without_switching`] for `ms`, then 100 round trips to main |
//! | [`read`] | `reader` | [`read_blocking`] on a pipe a thread writes to after `ms` |
//! | [`sleep`] | `sleeper` | [`sleep_blocking`]: the `nanosleep` system call for `ms` |
//! | [`idle_hub`] | `hub`, marked idle | sleeps `ms` (`nanosleep`) with nothing to do |

// The one unsafe block: the raw `nanosleep` system call (see `sleep_blocking`).
#![allow(unsafe_code)]

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use greenlet::{getcurrent, Error, Greenlet};

/// A greenlet a scenario created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub id: u64,
    pub name: &'static str,
    pub idle: bool,
}

/// One blocking episode, as the greenlet measured it around the call that blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// The greenlet that blocked.
    pub greenlet: u64,
    pub name: &'static str,
    /// The function it blocked in (never inlined: it shows in stacks).
    pub function: &'static str,
    /// The system call it blocked in, for the off-CPU scenarios.
    pub syscall: Option<&'static str>,
    /// Whether it computed (true) or waited in the kernel.
    pub on_cpu: bool,
    /// The duration asked for.
    pub requested: Duration,
    /// Wall time of the call, measured around it.
    pub measured: Duration,
    /// The thread's CPU time over the call.
    pub cpu: Duration,
    /// Wall time main measured around its switch into the greenlet, the one that ran the
    /// call: the greenlet's turn lies inside it, so a checker's turn is between `measured`
    /// and `outer` however slow the machine (valgrind, a loaded CI).
    pub outer: Duration,
}

/// The CPU work of one of the `split` greenlets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    pub greenlet: u64,
    pub name: &'static str,
    /// Its CPU work per turn.
    pub slice: Duration,
    /// The turns it took, and the CPU time of the work it did in them: its iterations at the
    /// rate [`iterations_per_us`] measured.
    pub turns: u64,
    pub busy: Duration,
}

/// What a scenario did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub scenario: &'static str,
    /// The OS thread it ran on (gettid).
    pub tid: i32,
    /// The thread's main greenlet.
    pub main: u64,
    pub greenlets: Vec<Created>,
    pub episodes: Vec<Episode>,
    /// `split` only.
    pub work: Vec<Work>,
    /// Transfers the scenario's greenlets made (counted by the scenario).
    pub switches: u64,
    /// Wall time of the whole scenario.
    pub elapsed: Duration,
    /// The thread's CPU time over the whole scenario.
    pub cpu: Duration,
}

impl Report {
    fn new(scenario: &'static str) -> Report {
        Report {
            scenario,
            tid: nix::unistd::gettid().as_raw(),
            main: getcurrent().id(),
            greenlets: Vec::new(),
            episodes: Vec::new(),
            work: Vec::new(),
            switches: 0,
            elapsed: Duration::ZERO,
            cpu: Duration::ZERO,
        }
    }

    fn created(&mut self, g: &Greenlet, name: &'static str) {
        self.greenlets.push(Created {
            id: g.id(),
            name,
            idle: g.is_idle(),
        });
    }
}

/// The scenario names, as `blocker --scenario` takes them.
pub const SCENARIOS: [&str; 5] = ["split", "spin", "read", "sleep", "idle-hub"];

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("CLOCK_THREAD_CPUTIME_ID");
    Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
}

/// Spins for `d` on the CPU (a little arithmetic, and the clock).
#[inline(never)]
fn busy(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        compute(16);
    }
}

/// `n` steps of arithmetic the compiler cannot skip: CPU work and nothing else.
#[inline(never)]
fn compute(n: u64) {
    let mut x = 0_u64;
    for _ in 0..n {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    black_box(x);
}

/// Steps of [`compute`] per microsecond of this thread's CPU time, measured once per process
/// over 20 ms of CPU time (by the thread's CPU clock, so a preemption does not skew it).
pub fn iterations_per_us() -> f64 {
    static RATE: OnceLock<f64> = OnceLock::new();
    *RATE.get_or_init(|| {
        const BLOCK: u64 = 20_000;
        let start = thread_cpu_time();
        let mut steps = 0_u64;
        loop {
            compute(BLOCK);
            steps += BLOCK;
            let spent = thread_cpu_time().saturating_sub(start);
            if spent >= Duration::from_millis(20) {
                break steps as f64 / (spent.as_nanos() as f64 / 1000.0);
            }
        }
    })
}

/// Computes for `d` without switching: the on-CPU blocking the lint reports.
#[inline(never)]
pub fn spin_without_switching(d: Duration) {
    busy(d);
    black_box(());
}

/// `read(2)` of one byte from `pipe`, which blocks until the writer writes.
#[inline(never)]
pub fn read_blocking(pipe: &mut File) -> std::io::Result<u8> {
    let mut byte = [0_u8; 1];
    pipe.read_exact(&mut byte)?;
    Ok(black_box(byte[0]))
}

/// The `nanosleep` system call itself, for `d` (glibc's `nanosleep` and `std::thread::sleep`
/// go through `clock_nanosleep`; the tests want the system call named `nanosleep`).
#[inline(never)]
pub fn sleep_blocking(d: Duration) {
    let mut request = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
    };
    loop {
        let mut remaining = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `nanosleep(req, rem)` reads the timespec `request` and writes `remaining`,
        // both live locals of the right type; it touches no other memory.
        let rc =
            unsafe { libc::syscall(libc::SYS_nanosleep, &raw const request, &raw mut remaining) };
        // Interrupted by a signal (a tracer attaching): sleep the rest.
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
        request = remaining;
    }
    black_box(());
}

/// Runs `call` in the greenlet `name`, timing it (wall and thread CPU time), then makes the
/// greenlet switch normally: 100 round trips to main. Returns the episode.
fn episode_in_greenlet(
    report: &mut Report,
    name: &'static str,
    idle: bool,
    function: &'static str,
    syscall: Option<&'static str>,
    requested: Duration,
    call: impl FnOnce() -> Result<(), Error> + 'static,
) -> Result<(), Error> {
    let main = getcurrent();
    let g = Greenlet::builder().name(name).idle(idle).build(
        move |_| -> Result<(Duration, Duration), Error> {
            let cpu = thread_cpu_time();
            let start = Instant::now();
            call()?;
            let measured = start.elapsed();
            let cpu = thread_cpu_time() - cpu;
            for _ in 0..100 {
                main.switch(())?;
            }
            Ok((measured, cpu))
        },
    );
    report.created(&g, name);
    let switched = Instant::now();
    let mut result = g.switch(())?;
    let outer = switched.elapsed();
    report.switches += 1;
    while !g.is_dead() {
        result = g.switch(())?;
        report.switches += 2;
    }
    report.switches += 1; // the finished greenlet's result, back to main
    let (measured, cpu) = result
        .downcast::<(Duration, Duration)>()
        .map_err(|_| Error::msg("the scenario's greenlet returned no timing"))?;
    report.episodes.push(Episode {
        greenlet: g.id(),
        name,
        function,
        syscall,
        on_cpu: syscall.is_none(),
        requested,
        measured,
        cpu,
        outer,
    });
    Ok(())
}

fn timed(
    scenario: &'static str,
    body: impl FnOnce(&mut Report) -> Result<(), Error>,
) -> Result<Report, Error> {
    let mut report = Report::new(scenario);
    let (start, cpu) = (Instant::now(), thread_cpu_time());
    body(&mut report)?;
    report.elapsed = start.elapsed();
    report.cpu = thread_cpu_time().saturating_sub(cpu);
    Ok(report)
}

/// `spinner` computes for `ms` in [`spin_without_switching`] without switching.
pub fn spin(ms: u64) -> Result<Report, Error> {
    timed("spin", |report| {
        let d = Duration::from_millis(ms);
        episode_in_greenlet(
            report,
            "spinner",
            false,
            "spin_without_switching",
            None,
            d,
            move || {
                spin_without_switching(d);
                Ok(())
            },
        )
    })
}

/// `reader` blocks in `read(2)` on a pipe ([`read_blocking`]); a writer thread writes one
/// byte `ms` after the reader says it is about to read.
pub fn read(ms: u64) -> Result<Report, Error> {
    let d = Duration::from_millis(ms);
    let (rx, tx) = nix::unistd::pipe().map_err(|e| Error::msg(format!("pipe: {e}")))?;
    let (mut rx, mut tx) = (File::from(rx), File::from(tx));
    let (go, wait) = mpsc::channel::<()>();
    let writer = std::thread::Builder::new()
        .name("blocker-writer".into())
        .spawn(move || {
            if wait.recv().is_ok() {
                std::thread::sleep(d);
                let _ = tx.write_all(b"x");
            }
        })
        .map_err(|e| Error::msg(format!("cannot spawn the writer: {e}")))?;
    let report = timed("read", |report| {
        episode_in_greenlet(report, "reader", false, "read_blocking", Some("read"), d, {
            move || {
                go.send(())
                    .map_err(|_| Error::msg("the writer thread is gone"))?;
                read_blocking(&mut rx).map_err(|e| Error::msg(format!("read: {e}")))?;
                Ok(())
            }
        })
    });
    writer
        .join()
        .map_err(|_| Error::msg("the writer thread panicked"))?;
    report
}

/// `sleeper` sleeps `ms` in the `nanosleep` system call ([`sleep_blocking`]).
pub fn sleep(ms: u64) -> Result<Report, Error> {
    timed("sleep", |report| {
        let d = Duration::from_millis(ms);
        episode_in_greenlet(
            report,
            "sleeper",
            false,
            "sleep_blocking",
            Some("nanosleep"),
            d,
            move || {
                sleep_blocking(d);
                Ok(())
            },
        )
    })
}

/// `hub`, marked idle, waits `ms` in `nanosleep` with nothing to do: not a blocking.
pub fn idle_hub(ms: u64) -> Result<Report, Error> {
    timed("idle-hub", |report| {
        let d = Duration::from_millis(ms);
        episode_in_greenlet(
            report,
            "hub",
            true,
            "sleep_blocking",
            Some("nanosleep"),
            d,
            move || {
                sleep_blocking(d);
                Ok(())
            },
        )
    })
}

/// `seventy` and `thirty` switch to each other for `seconds`, doing 3.5 µs and 1.5 µs of CPU
/// work per turn (as steps of arithmetic, so a preemption in a turn does not cut its work
/// short however loaded the machine is): a 70/30 split of the thread's CPU at up to 400,000 switches a second (more
/// than 100,000 on a loaded machine).
pub fn split(seconds: f64) -> Result<Report, Error> {
    split_with(
        seconds,
        Duration::from_nanos(3500),
        Duration::from_nanos(1500),
    )
}

/// [`split`] with other slices.
///
/// `seventy` creates `thirty` (its child) and starts it; then they take turns, `seventy`
/// sending `true` while the time lasts and `false` at the end, when `thirty` returns to it.
/// Transfers: main -> seventy, one per turn of each, thirty's result, seventy's result.
pub fn split_with(seconds: f64, seventy: Duration, thirty: Duration) -> Result<Report, Error> {
    let rate = iterations_per_us();
    let steps = |d: Duration| (d.as_nanos() as f64 / 1000.0 * rate).round().max(1.0) as u64;
    let (steps_70, steps_30) = (steps(seventy), steps(thirty));
    // The CPU time of `turns` turns of `steps` each, at the measured rate.
    let work = move |turns: u64, steps: u64| {
        Duration::from_nanos((turns as f64 * steps as f64 / rate * 1000.0) as u64)
    };
    timed("split", |report| {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let seventy_g =
            Greenlet::builder()
                .name("seventy")
                .build(move |_| -> Result<(u64, u64, u64), Error> {
                    let thirty_g = Greenlet::builder().name("thirty").build(
                        move |first: greenlet::Value| -> Result<u64, Error> {
                            let peer = getcurrent().parent().expect("seventy, its parent");
                            let mut turns = 0_u64;
                            let mut more = first.downcast::<bool>().unwrap_or(false);
                            while more {
                                compute(steps_30);
                                turns += 1;
                                more = peer.switch(())?.downcast::<bool>().unwrap_or(false);
                            }
                            Ok(turns)
                        },
                    );
                    let mut turns = 0_u64;
                    loop {
                        compute(steps_70);
                        turns += 1;
                        let more = Instant::now() < deadline;
                        let answer = thirty_g.switch(more)?;
                        if !more {
                            let theirs = answer
                                .downcast::<u64>()
                                .map_err(|_| Error::msg("thirty returned no count"))?;
                            return Ok((turns, thirty_g.id(), theirs));
                        }
                    }
                });
        let result = seventy_g.switch(())?;
        let (turns, thirty_id, turns_30) = result
            .downcast::<(u64, u64, u64)>()
            .map_err(|_| Error::msg("seventy returned no count"))?;
        report.created(&seventy_g, "seventy");
        report.greenlets.push(Created {
            id: thirty_id,
            name: "thirty",
            idle: false,
        });
        report.work = vec![
            Work {
                greenlet: seventy_g.id(),
                name: "seventy",
                slice: seventy,
                turns,
                busy: work(turns, steps_70),
            },
            Work {
                greenlet: thirty_id,
                name: "thirty",
                slice: thirty,
                turns: turns_30,
                busy: work(turns_30, steps_30),
            },
        ];
        report.switches = 1 + turns + turns_30 + 1 + 1;
        Ok(())
    })
}
