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
        line.contains("\"deep-diver\" (stack 65536 bytes); aborting"),
        "{line}"
    );
    assert!(
        line.starts_with("greenlet: stack overflow in greenlet "),
        "{line}"
    );
}
