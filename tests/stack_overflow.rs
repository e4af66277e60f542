//! A stack overflow inside a greenlet is reported in one line naming the greenlet and its
//! stack size, then the process aborts (issue "Performance and scale", item 5).

mod support;

use std::os::unix::process::ExitStatusExt;

use greenlet::Greenlet;

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let buffer = [depth; 64];
    std::hint::black_box(&buffer);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + std::hint::black_box(buffer[0])
}

#[test]
fn overflow_in_a_named_greenlet_is_reported_then_aborts() {
    let Some((status, _, stderr)) =
        support::run_in_child("overflow_in_a_named_greenlet_is_reported_then_aborts")
    else {
        let g = Greenlet::builder()
            .name("deep-diver")
            .stack_size(64 * 1024)
            .build(|_| Ok(recurse(0)));
        let _ = g.switch(());
        unreachable!("the overflow aborts the process");
    };
    assert_eq!(
        status.signal(),
        Some(6),
        "SIGABRT expected; stderr:\n{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("greenlet: stack overflow"))
        .unwrap_or_else(|| panic!("no overflow report in:\n{stderr}"));
    // The id of the first non-main greenlet of the child's test thread is not fixed; the
    // rest of the line is.
    assert!(
        line.contains(
            "\"deep-diver\" (stack 65536 bytes; Builder::stack_size sets more); aborting"
        ),
        "{line}"
    );
    assert!(
        line.starts_with("greenlet: stack overflow in greenlet "),
        "{line}"
    );
}

#[inline(never)]
fn fail_at(depth: u32) -> u32 {
    let frame = std::hint::black_box([depth; 32]);
    if depth == 0 {
        panic!("a greenlet at the default stack size panicked on purpose");
    }
    fail_at(depth - 1) + frame[0]
}

/// The default stack size (issue 17: 64 KiB) is enough to panic in a greenlet, print the
/// panic's backtrace (`RUST_BACKTRACE=1`, symbolized on the greenlet's own stack: the
/// heaviest thing the default panic hook does), and unwind out of it into the parent. This
/// binary is built without optimizations, whose frames are the larger ones.
#[test]
fn a_greenlet_at_the_default_stack_size_panics_and_unwinds_with_a_backtrace() {
    let name = "a_greenlet_at_the_default_stack_size_panics_and_unwinds_with_a_backtrace";
    let Some((status, stdout, stderr)) = support::run_in_child(name) else {
        // The style is read at the first panic: none has happened in this child yet.
        std::env::set_var("RUST_BACKTRACE", "1");
        let g = Greenlet::new(|_| {
            // A backtrace taken and symbolized on the greenlet's stack, by the program itself.
            let trace = std::backtrace::Backtrace::force_capture().to_string();
            let here = trace.contains("stack_overflow::a_greenlet_at_the_default_stack_size");
            println!("captured backtrace names its greenlet's frames: {here}");
            Ok(fail_at(20))
        });
        assert_eq!(greenlet::DEFAULT_STACK_SIZE, 64 * 1024);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.switch(())));
        let payload = caught.expect_err("the panic unwinds into the parent");
        println!(
            "parent caught: {}",
            greenlet::panic_message(payload.as_ref())
        );
        assert!(g.is_dead());
        return;
    };
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("captured backtrace names its greenlet's frames: true"),
        "{stdout}"
    );
    assert!(
        stdout.contains("parent caught: a greenlet at the default stack size panicked on purpose"),
        "{stdout}"
    );
    // The default hook's report, with its backtrace through the greenlet's frames.
    assert!(
        stderr.contains("panicked at") && stderr.contains("stack backtrace:"),
        "{stderr}"
    );
    assert!(stderr.contains("stack_overflow::fail_at"), "{stderr}");
}
