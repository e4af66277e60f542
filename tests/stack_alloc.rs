//! The greenlet stack allocator: pooling, trimming, size classes, scale, thread exit, and
//! the one-line overflow report.
//!
//! Tests that count mappings, RSS or allocator counters, and tests that crash on purpose, run
//! their body in a child process (this test binary re-executed for that test alone,
//! [`support::run_in_child`]), so other tests running in parallel cannot disturb the figures.

mod support;

use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;
use std::process::Output;

use corosensei::stack::Stack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use greenlet::stack::{self, GreenStack, GuardMode, DEFAULT_STACK_SIZE};

/// Runs `body` when this process is the child for `name` ([`support::run_in_child`]);
/// otherwise starts that child and returns its output.
fn in_child(name: &str, body: impl FnOnce()) -> Option<Output> {
    let Some((status, stdout, stderr)) = support::run_in_child(name) else {
        body();
        return None;
    };
    eprintln!("--- child {name}: {status:?}\n--- stdout:\n{stdout}--- stderr:\n{stderr}");
    Some(Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    })
}

/// Asserts that a child exited normally and its test passed.
fn expect_pass(out: Option<Output>) {
    if let Some(out) = out {
        assert!(out.status.success(), "child failed: {:?}", out.status);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("1 passed"),
            "child did not run its test:\n{stdout}"
        );
    }
}

/// Asserts that a child died of SIGABRT after printing exactly `line` once on stderr, and
/// returns its stderr.
fn expect_overflow_abort(out: Option<Output>, line: &str) {
    let Some(out) = out else { return };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc_sigabrt()),
        "expected death by SIGABRT, got {:?}; stderr:\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("greenlet:"))
        .collect();
    assert_eq!(lines, [line], "stderr:\n{stderr}");
}

fn libc_sigabrt() -> i32 {
    nix::sys::signal::Signal::SIGABRT as i32
}

fn maps_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .count()
}

/// A `kB` field of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("kB value");
    kb * 1024
}

fn rss() -> usize {
    status_bytes("VmRSS:")
}

type Co = Coroutine<(), (), (), GreenStack>;

/// A coroutine that touches `kib` KiB of its stack, then finishes.
fn toucher(stack: GreenStack, kib: usize) -> Co {
    Coroutine::with_stack(stack, move |_: &Yielder<(), ()>, ()| match kib {
        0 => {}
        16 => touch::<{ 16 << 10 }>(),
        64 => touch::<{ 64 << 10 }>(),
        512 => touch::<{ 512 << 10 }>(),
        _ => panic!("unsupported touch size {kib}"),
    })
}

#[inline(never)]
fn touch<const N: usize>() {
    let mut buf = [1u8; N];
    black_box(&mut buf);
}

/// Runs a coroutine that touches `kib` KiB of the stack and returns the stack.
fn run_touching(stack: GreenStack, kib: usize) -> GreenStack {
    let mut co = toucher(stack, kib);
    assert!(matches!(co.resume(()), CoroutineResult::Return(())));
    co.into_stack()
}

/// A coroutine that suspends once (its stack stays live, top page touched).
fn suspended(stack: GreenStack) -> Co {
    let mut co = Coroutine::with_stack(stack, |y: &Yielder<(), ()>, ()| {
        y.suspend(());
    });
    assert!(matches!(co.resume(()), CoroutineResult::Yield(())));
    co
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 512];
    frame[0] = depth as u8;
    black_box(&mut frame);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(frame[1] as u64)
}

/// Recurses `depth` frames of about 1 KiB each.
#[inline(never)]
fn recurse_to(depth: usize) -> u64 {
    let mut frame = [0u8; 1024];
    frame[0] = depth as u8;
    black_box(&mut frame);
    if depth == 0 {
        return frame[0] as u64;
    }
    recurse_to(depth - 1).wrapping_add(frame[1] as u64)
}

// -------------------------------------------------------------------------------------------

#[test]
fn pool_reuses_stacks_without_new_mappings() {
    expect_pass(in_child("pool_reuses_stacks_without_new_mappings", || {
        // One stack allocated and released over and over is the same stack, no new slot.
        let first = stack::allocate(DEFAULT_STACK_SIZE).unwrap();
        let base = first.base();
        drop(first);
        let carved = stack::stats().carved;
        for _ in 0..10_000 {
            let s = stack::allocate(DEFAULT_STACK_SIZE).unwrap();
            assert_eq!(s.base(), base);
            let s = run_touching(s, 0);
            stack::release(s);
        }
        assert_eq!(stack::stats().carved, carved);

        // A thousand at once, released, then a thousand again: the same address ranges, no
        // new slot, no new mapping.
        let batch: Vec<GreenStack> = (0..1000)
            .map(|_| stack::allocate(DEFAULT_STACK_SIZE).unwrap())
            .collect();
        let mut bases: Vec<usize> = batch.iter().map(|s| s.base().get()).collect();
        drop(batch);
        let maps = maps_count();
        let carved = stack::stats().carved;
        let again: Vec<GreenStack> = (0..1000)
            .map(|_| stack::allocate(DEFAULT_STACK_SIZE).unwrap())
            .collect();
        let mut again_bases: Vec<usize> = again.iter().map(|s| s.base().get()).collect();
        assert_eq!(
            stack::stats().carved,
            carved,
            "reallocation carved new slots"
        );
        assert_eq!(maps_count(), maps, "reallocation created mappings");
        bases.sort_unstable();
        again_bases.sort_unstable();
        assert_eq!(bases, again_bases);
        println!(
            "stats after reuse: {:?}, maps {}, guard mode {:?}",
            stack::stats(),
            maps,
            stack::guard_mode()
        );
    }));
}

#[test]
fn trimming_above_the_high_water_mark_returns_memory() {
    expect_pass(in_child(
        "trimming_above_the_high_water_mark_returns_memory",
        || {
            const N: usize = 256;
            // 1 MiB stacks (the class is not the default one): each touches 512 KiB.
            const SIZE: usize = 1 << 20;
            let hot = stack::pool_high_water(SIZE).unwrap();
            assert_eq!(hot, 32);
            let before = rss();
            let stacks: Vec<GreenStack> = (0..N)
                .map(|_| run_touching(stack::allocate(SIZE).unwrap(), 512))
                .collect();
            let touched = rss();
            let grew = touched.saturating_sub(before);
            assert!(
                grew >= N * (512 << 10) * 9 / 10,
                "touching {N} x 512 KiB grew RSS by only {grew} bytes"
            );
            drop(stacks);
            let after = rss();
            let st = stack::stats();
            assert_eq!(st.thread_pooled, hot);
            assert_eq!(st.shared_free, N - hot);
            let dropped = touched.saturating_sub(after);
            assert!(
                dropped >= (N - hot) * (512 << 10) * 9 / 10,
                "releasing {} stacks above the mark dropped RSS by only {dropped} bytes",
                N - hot
            );
            // The hot pool kept its pages ...
            assert!(after >= before + hot * (512 << 10) * 9 / 10);
            // ... until trimmed on demand.
            stack::trim_pool();
            let trimmed = rss();
            assert_eq!(stack::stats().thread_pooled, 0);
            assert_eq!(stack::stats().shared_free, N);
            assert!(
                after.saturating_sub(trimmed) >= hot * (512 << 10) * 9 / 10,
                "trim_pool dropped RSS by only {} bytes",
                after.saturating_sub(trimmed)
            );
            // Trimmed stacks are reused (zero-filled again) without new slots.
            let carved = stack::stats().carved;
            let s = run_touching(stack::allocate(SIZE).unwrap(), 64);
            drop(s);
            assert_eq!(stack::stats().carved, carved);
            println!(
                "RSS: before {before}, touched {touched}, after release {after}, after trim {trimmed}"
            );
        },
    ));
}

#[test]
fn distinct_sizes_get_distinct_classes() {
    let sizes = [
        1usize,
        4096,
        16 << 10,
        (16 << 10) + 1,
        65536,
        100_000,
        DEFAULT_STACK_SIZE,
        3 << 20,
        8 << 20,
    ];
    let page = 4096;
    let stacks: Vec<GreenStack> = sizes
        .iter()
        .map(|&size| {
            let s = stack::allocate(size).unwrap();
            let usable = s.usable_size();
            assert!(usable >= size && usable >= stack::MIN_STACK_SIZE);
            assert!(usable.is_power_of_two());
            assert_eq!(Some(usable), stack::rounded_size(size));
            assert_eq!(s.base().get() - s.limit().get(), usable + page, "{s:?}");
            assert_eq!(s.base().get() % page, 0);
            assert_eq!(s.limit().get() % page, 0);
            s
        })
        .collect();
    // No two stacks overlap.
    for (i, a) in stacks.iter().enumerate() {
        for b in &stacks[i + 1..] {
            assert!(
                a.base() <= b.limit() || b.base() <= a.limit(),
                "{a:?} overlaps {b:?}"
            );
        }
    }
    // Each stack really has its usable size: use ~3/4 of it in 1 KiB frames.
    for s in stacks {
        let usable = s.usable_size();
        let depth = usable * 3 / 4 / 1200;
        let mut co: Coroutine<(), (), u64, GreenStack> =
            Coroutine::with_stack(s, move |_: &Yielder<(), ()>, ()| recurse_to(depth));
        assert!(matches!(co.resume(()), CoroutineResult::Return(_)));
        let s = co.into_stack();
        // Released into the pool of its own class: the next allocation of that size gets it.
        let base = s.base();
        drop(s);
        let again = stack::allocate(usable).unwrap();
        assert_eq!(again.base(), base);
        assert_eq!(again.usable_size(), usable);
    }
    assert_eq!(
        stack::allocate(stack::MAX_STACK_SIZE + 1)
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::InvalidInput
    );
}

#[test]
fn the_largest_stack_costs_only_what_it_touches() {
    expect_pass(in_child(
        "the_largest_stack_costs_only_what_it_touches",
        || {
            let rss0 = rss();
            let s = stack::allocate(stack::MAX_STACK_SIZE).unwrap();
            assert_eq!(s.usable_size(), 1 << 40);
            let s = run_touching(s, 512);
            let grew = rss().saturating_sub(rss0);
            assert!(
                grew < 4 << 20,
                "a 1 TiB stack touched 512 KiB: RSS grew {grew}"
            );
            // Above the 32 MiB high-water mark: trimmed on release.
            drop(s);
            assert_eq!(stack::pool_high_water(stack::MAX_STACK_SIZE), Some(0));
            assert_eq!(stack::stats().shared_free, 1);
        },
    ));
}

#[test]
fn coroutines_run_on_green_stacks() {
    for round in 0..200u64 {
        let s = stack::allocate(64 << 10).unwrap();
        s.set_owner(round + 1, Some("gen"));
        let mut co: Coroutine<u64, u64, u64, GreenStack> =
            Coroutine::with_stack(s, |y: &Yielder<u64, u64>, mut x: u64| {
                let mut sum = 0;
                while x != 0 {
                    sum += x;
                    x = y.suspend(sum);
                }
                sum
            });
        for i in 1..=100 {
            match co.resume(i) {
                CoroutineResult::Yield(sum) => assert_eq!(sum, i * (i + 1) / 2),
                CoroutineResult::Return(_) => panic!("returned early"),
            }
        }
        assert!(matches!(co.resume(0), CoroutineResult::Return(5050)));
        stack::release(co.into_stack());
    }
    // A coroutine dropped while suspended is unwound and its stack still comes back.
    let s = stack::allocate(64 << 10).unwrap();
    let base = s.base();
    let co = suspended(s);
    assert!(co.started() && !co.done());
    drop(co);
    assert_eq!(stack::allocate(64 << 10).unwrap().base(), base);
}

#[test]
fn the_smallest_stack_can_panic_and_unwind() {
    expect_pass(in_child("the_smallest_stack_can_panic_and_unwind", || {
        // The default hook would print a backtrace if RUST_BACKTRACE is set, which needs more
        // than 16 KiB; keep the message formatting, drop the backtrace.
        std::panic::set_hook(Box::new(|info| eprintln!("child panicked: {info}")));
        let s = stack::allocate(1).unwrap();
        assert_eq!(s.usable_size(), stack::MIN_STACK_SIZE);
        let base = s.base();
        let mut co: Coroutine<(), (), (), GreenStack> =
            Coroutine::with_stack(s, |_: &Yielder<(), ()>, ()| {
                let v = vec![1, 2, 3];
                panic!("boom after {:?}", v);
            });
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| co.resume(())));
        let payload = caught.expect_err("the panic reaches the resumer");
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some("boom after [1, 2, 3]")
        );
        assert!(co.done());
        drop(co.into_stack());
        assert_eq!(stack::allocate(1).unwrap().base(), base);
    }));
}

#[test]
fn hundred_thousand_live_suspended_greenlet_stacks() {
    expect_pass(in_child(
        "hundred_thousand_live_suspended_greenlet_stacks",
        || live_stacks(100_000),
    ));
}

/// Measurement run: `cargo test --release --test stack_alloc -- --ignored million`.
#[test]
#[ignore = "a million stacks take ~6 GiB (RSS + page tables); run by hand"]
fn million_live_suspended_greenlet_stacks() {
    expect_pass(in_child("million_live_suspended_greenlet_stacks", || {
        live_stacks(1_000_000)
    }));
}

fn live_stacks(n: usize) {
    let maps0 = maps_count();
    let rss0 = rss();
    let pte0 = status_bytes("VmPTE:");
    let mut live: Vec<Co> = Vec::with_capacity(n);
    drop(stack::allocate(DEFAULT_STACK_SIZE).unwrap());
    assert_eq!(
        stack::guard_mode(),
        Some(GuardMode::GuardInstall),
        "this kernel lacks MADV_GUARD_INSTALL (Linux 6.13+): one mapping pair per stack cannot \
         hold {n} stacks under the default vm.max_map_count"
    );
    let started = std::time::Instant::now();
    for i in 0..n {
        let s = stack::allocate(DEFAULT_STACK_SIZE).unwrap();
        s.set_owner(i as u64 + 1, None);
        live.push(suspended(s));
    }
    let took = started.elapsed();
    let maps = maps_count() - maps0;
    let per_rss = (rss() - rss0) as f64 / n as f64;
    let per_pte = (status_bytes("VmPTE:") - pte0) as f64 / n as f64;
    println!(
        "{n} live suspended coroutines on {} KiB stacks: {:.2} KiB RSS each (incl. {} B of Vec<Coroutine>), \
         {:.2} KiB page tables each, {maps} new mappings, {} slabs, guard {:?}, {:.0} ns each to create",
        DEFAULT_STACK_SIZE >> 10,
        per_rss / 1024.0,
        std::mem::size_of::<Co>(),
        per_pte / 1024.0,
        stack::stats().slabs,
        stack::guard_mode(),
        took.as_nanos() as f64 / n as f64,
    );
    assert!(maps <= 10, "{maps} new mappings for {n} stacks");
    assert!(
        per_rss <= 4.5 * 1024.0,
        "{per_rss:.0} bytes resident per stack"
    );
    // All of them are still usable: resume each to completion.
    for mut co in live.drain(..) {
        assert!(matches!(co.resume(()), CoroutineResult::Return(())));
        drop(co.into_stack());
    }
    assert_eq!(stack::stats().carved, n);
}

#[test]
fn mprotect_fallback_costs_two_mappings_per_stack() {
    expect_pass(in_child(
        "mprotect_fallback_costs_two_mappings_per_stack",
        || {
            assert!(stack::force_mprotect_guards());
            let maps0 = maps_count();
            let live: Vec<Co> = (0..500)
                .map(|_| suspended(stack::allocate(64 << 10).unwrap()))
                .collect();
            let maps = maps_count() - maps0;
            assert_eq!(stack::guard_mode(), Some(GuardMode::Mprotect));
            // The slab (1) plus a split (2) per stack, give or take the altstack and heap.
            assert!(
                (1000..=1010).contains(&maps),
                "{maps} new mappings for 500 stacks"
            );
            println!("mprotect fallback: {maps} new mappings for 500 stacks");
            drop(live);
        },
    ));
}

// -------------------------------------------------------------------------------------------
// Overflow reports.

#[test]
fn overflow_in_a_coroutine_names_the_greenlet_and_aborts() {
    expect_overflow_abort(
        in_child(
            "overflow_in_a_coroutine_names_the_greenlet_and_aborts",
            || {
                let s = stack::allocate(65536).unwrap();
                s.set_owner(42, Some("worker-7"));
                let mut co: Coroutine<(), (), u64, GreenStack> =
                    Coroutine::with_stack(s, |_: &Yielder<(), ()>, ()| recurse(0));
                co.resume(());
                unreachable!("the recursion cannot finish");
            },
        ),
        "greenlet: stack overflow in greenlet 42 \"worker-7\" (stack 65536 bytes; Builder::stack_size sets more); aborting",
    );
}

#[test]
fn overflow_of_an_unnamed_default_stack_on_a_spawned_thread() {
    expect_overflow_abort(
        in_child(
            "overflow_of_an_unnamed_default_stack_on_a_spawned_thread",
            || {
                std::thread::spawn(|| {
                    // Warm the thread's pool with other stacks first: the overflow is in a
                    // slot that is not the first one.
                    let others: Vec<GreenStack> = (0..3)
                        .map(|_| stack::allocate(DEFAULT_STACK_SIZE).unwrap())
                        .collect();
                    let s = stack::allocate(DEFAULT_STACK_SIZE).unwrap();
                    s.set_owner(7, None);
                    let mut co: Coroutine<(), (), u64, GreenStack> =
                        Coroutine::with_stack(s, |_: &Yielder<(), ()>, ()| recurse(0));
                    co.resume(());
                    drop(others);
                })
                .join()
                .unwrap();
                unreachable!("the recursion cannot finish");
            },
        ),
        "greenlet: stack overflow in greenlet 7 (stack 65536 bytes; Builder::stack_size sets more); aborting",
    );
}

#[test]
fn overflow_with_mprotect_guards_is_reported_too() {
    expect_overflow_abort(
        in_child("overflow_with_mprotect_guards_is_reported_too", || {
            assert!(stack::force_mprotect_guards());
            let s = stack::allocate(16 << 10).unwrap();
            s.set_owner(5, Some("fallback"));
            let mut co: Coroutine<(), (), u64, GreenStack> =
                Coroutine::with_stack(s, |_: &Yielder<(), ()>, ()| recurse(0));
            co.resume(());
            unreachable!("the recursion cannot finish");
        }),
        "greenlet: stack overflow in greenlet 5 \"fallback\" (stack 16384 bytes; Builder::stack_size sets more); aborting",
    );
}

#[test]
fn overflow_after_reuse_names_the_new_owner() {
    expect_overflow_abort(
        in_child("overflow_after_reuse_names_the_new_owner", || {
            let s = stack::allocate(32 << 10).unwrap();
            s.set_owner(1, Some("first"));
            let s = run_touching(s, 0);
            drop(s); // clears the owner
            let s = stack::allocate(32 << 10).unwrap();
            s.set_owner(2, Some("second"));
            let mut co: Coroutine<(), (), u64, GreenStack> =
                Coroutine::with_stack(s, |_: &Yielder<(), ()>, ()| recurse(0));
            co.resume(());
            unreachable!("the recursion cannot finish");
        }),
        "greenlet: stack overflow in greenlet 2 \"second\" (stack 32768 bytes; Builder::stack_size sets more); aborting",
    );
}

#[test]
fn thread_stack_overflow_still_reaches_rusts_handler() {
    let out = in_child("thread_stack_overflow_still_reaches_rusts_handler", || {
        stack::install_overflow_handler().unwrap();
        drop(stack::allocate(DEFAULT_STACK_SIZE).unwrap());
        std::thread::Builder::new()
            .name("deep".into())
            .stack_size(256 << 10)
            .spawn(|| recurse(0))
            .unwrap()
            .join()
            .unwrap();
        unreachable!("the recursion cannot finish");
    });
    if let Some(out) = out {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(libc_sigabrt()), "{stderr}");
        assert!(
            stderr.contains("thread 'deep'") && stderr.contains("has overflowed its stack"),
            "{stderr}"
        );
        assert!(!stderr.contains("greenlet:"), "{stderr}");
    }
}

/// Runs a greenlet that overflows from a thread-local destructor, the way a runtime kills its
/// greenlets when a thread exits.
struct OverflowOnTeardown {
    rearm: bool,
}

impl Drop for OverflowOnTeardown {
    fn drop(&mut self) {
        if self.rearm {
            // Rust has disabled the thread's alternate signal stack by now; re-enable ours.
            stack::install_overflow_handler().unwrap();
        }
        let s = stack::allocate(64 << 10).unwrap();
        s.set_owner(99, Some("teardown"));
        let mut co: Coroutine<(), (), u64, GreenStack> =
            Coroutine::with_stack(s, |_: &Yielder<(), ()>, ()| recurse(0));
        co.resume(());
    }
}

thread_local! {
    static TEARDOWN: std::cell::RefCell<Option<OverflowOnTeardown>> = const { std::cell::RefCell::new(None) };
}

const TEARDOWN_LINE: &str =
    "greenlet: stack overflow in greenlet 99 \"teardown\" (stack 65536 bytes; Builder::stack_size sets more); aborting";

#[test]
fn overflow_in_teardown_after_the_pool_is_gone() {
    expect_overflow_abort(
        in_child("overflow_in_teardown_after_the_pool_is_gone", || {
            std::thread::spawn(|| {
                // Registered before the allocator's thread-locals, so destroyed after them:
                // an allocation without a pool re-enables the signal stack by itself.
                TEARDOWN.with(|t| *t.borrow_mut() = Some(OverflowOnTeardown { rearm: false }));
                drop(stack::allocate(64 << 10).unwrap());
            })
            .join()
            .unwrap();
            unreachable!("the thread's teardown overflows");
        }),
        TEARDOWN_LINE,
    );
}

#[test]
fn overflow_in_teardown_while_the_pool_lives() {
    expect_overflow_abort(
        in_child("overflow_in_teardown_while_the_pool_lives", || {
            std::thread::spawn(|| {
                // Registered after the pool, so destroyed before it: the runtime's teardown
                // must call install_overflow_handler() first.
                drop(stack::allocate(64 << 10).unwrap());
                TEARDOWN.with(|t| *t.borrow_mut() = Some(OverflowOnTeardown { rearm: true }));
            })
            .join()
            .unwrap();
            unreachable!("the thread's teardown overflows");
        }),
        TEARDOWN_LINE,
    );
}

// -------------------------------------------------------------------------------------------
// Threads.

#[test]
fn stacks_outlive_the_thread_that_allocated_them() {
    expect_pass(in_child(
        "stacks_outlive_the_thread_that_allocated_them",
        || {
            // Checked out by a thread that exits, released later by this one: they land in this
            // thread's pool.
            let stacks = std::thread::spawn(|| {
                let v: Vec<GreenStack> = (0..10)
                    .map(|i| {
                        let s = stack::allocate(64 << 10).unwrap();
                        s.set_owner(i + 1, Some("orphan"));
                        run_touching(s, 16)
                    })
                    .collect();
                v
            })
            .join()
            .unwrap();
            let before = stack::stats();
            drop(stacks);
            let after = stack::stats();
            assert_eq!(after.thread_pooled, before.thread_pooled + 10);
            assert_eq!(after.carved, before.carved);
        },
    ));
}

thread_local! {
    static HOLDER: std::cell::RefCell<Vec<GreenStack>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[test]
fn stacks_released_during_thread_teardown() {
    expect_pass(in_child("stacks_released_during_thread_teardown", || {
        let shared0 = stack::stats().shared_free;
        // HOLDER's destructor registered before the pool's: it runs after the pool is gone,
        // so its stacks take the no-pool path.
        std::thread::spawn(|| {
            HOLDER.with(|h| h.borrow_mut().clear());
            let s: Vec<GreenStack> = (0..5)
                .map(|_| run_touching(stack::allocate(64 << 10).unwrap(), 16))
                .collect();
            HOLDER.with(|h| h.borrow_mut().extend(s));
            // And a few more in the pool itself.
            drop(stack::allocate(64 << 10).unwrap());
        })
        .join()
        .unwrap();
        // The other order: the pool first, then HOLDER.
        std::thread::spawn(|| {
            drop(stack::allocate(64 << 10).unwrap());
            let s: Vec<GreenStack> = (0..5)
                .map(|_| run_touching(stack::allocate(64 << 10).unwrap(), 16))
                .collect();
            HOLDER.with(|h| h.borrow_mut().extend(s));
        })
        .join()
        .unwrap();
        // Thread 1 carved 6 stacks; thread 2 reused them from the shared list. All 6 are on
        // the shared list again, whatever order the destructors ran in.
        let st = stack::stats();
        assert_eq!(st.carved, 6);
        assert_eq!(st.shared_free - shared0, 6, "{st:?}");
        // And they are reusable here.
        let again: Vec<GreenStack> = (0..6).map(|_| stack::allocate(64 << 10).unwrap()).collect();
        assert_eq!(stack::stats().carved, 6);
        drop(again);
    }));
}
