//! Spec section 5 (exceptions and death): `docs/reference/python-greenlet-reference.md` §5.1-§5.5,
//! ported to the Rust runtime. An exception is an `Err(Error)` returned by `run`; a panic escaping
//! `run` is carried the same way and resumes unwinding in the parent (spec R3).
//!
//! Not applicable (spec R1):
//! - §5.3's trigger, a parent without `run` (`AttributeError: run`): impossible by
//!   construction. Its Rust counterpart is a parent that cannot start because its stack cannot
//!   be allocated (`Error::StackAllocation`), tested here.
//! - §5.4, `sys.exc_info()` per greenlet: Rust has no ambient "current exception"; an `Err` is
//!   a value in the frame that holds it. The item's Rust counterpart here is about panics, the
//!   only unwinding state: a panic escaping a child goes to its parent (not to whoever switched
//!   last) and can be caught there.
//! - §5.5, the Python traceback: its counterpart is where the panic resumes unwinding (the
//!   parent's pending `switch` call) and which frames it leaves alone (the intermediate
//!   greenlet's).

mod support;

use std::cell::{OnceCell, RefCell};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use greenlet::{getcurrent, panic_message, Error, Greenlet, GreenletExit};
use support::Log;

/// Python's `KeyError`, as a user error type.
#[derive(Debug, Clone, PartialEq)]
struct KeyError(&'static str);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyError({:?})", self.0)
    }
}

impl std::error::Error for KeyError {}

fn bad(_: greenlet::Value) -> Result<(), Error> {
    Err(Error::user(KeyError("k")))
}

/// c01_exception_propagates_to_parent.py: an error escaping `run` kills the greenlet and comes
/// out of the parent's pending call, even when the parent is not the greenlet that switched
/// in last.
#[test]
fn r5_1_error_goes_to_parent() {
    let out = Log::new();
    let g = Greenlet::new(bad);
    match g.switch(()) {
        Err(e) => out.say(format!(
            "main caught {} {}",
            e.downcast_ref::<KeyError>().unwrap(),
            g.is_dead()
        )),
        Ok(v) => out.say(format!("no error: {v:?}")),
    }
    // Propagation goes to the *parent*, not to whoever switched last.
    let main = getcurrent();
    let p = Greenlet::new({
        let main = main.clone();
        move |_| match main.switch("p waiting") {
            Err(e) => Ok(format!("p caught {e}")),
            Ok(v) => Ok(format!("p resumed with {v:?}")),
        }
    });
    out.say(p.switch(()).unwrap().downcast::<&str>().unwrap());
    let c = Greenlet::builder().parent(&p).build(bad);
    // main switches to c; c fails; the error lands in p; p returns to main.
    out.say(c.switch(()).unwrap().downcast::<String>().unwrap());
    out.say(format!("{} {}", c.is_dead(), p.is_dead()));
    assert_eq!(
        out.lines(),
        [
            "main caught KeyError(\"k\") true",
            "p waiting",
            "p caught KeyError(\"k\")",
            "true true",
        ]
    );
}

/// c02_greenletexit_returned.py: a `GreenletExit` escaping `run` is not an error at the parent:
/// the parent receives the `GreenletExit` itself, message included, as a value.
#[test]
fn r5_2_greenlet_exit_arrives_as_value() {
    let out = Log::new();
    let r1 = |_| -> Result<(), Error> { Err(GreenletExit::new().into()) };
    let r2 = |_| -> Result<(), Error> { Err(GreenletExit::with_message("bye 2").into()) };
    // The usual way: a kill received from a pending switch, passed on with `?`.
    let r3 = |_| -> Result<(), Error> {
        let me = getcurrent();
        me.throw(GreenletExit::with_message("sub"))?;
        Ok(())
    };
    for g in [Greenlet::new(r1), Greenlet::new(r2), Greenlet::new(r3)] {
        let v = g.switch(()).expect("GreenletExit arrives as a value");
        let exit = v.downcast::<GreenletExit>().unwrap();
        out.say(format!("{} {:?} {}", exit, exit.message(), g.is_dead()));
    }
    assert_eq!(
        out.lines(),
        [
            "GreenletExit None true",
            "GreenletExit: bye 2 Some(\"bye 2\") true",
            "GreenletExit: sub Some(\"sub\") true",
        ]
    );
}

/// A stack size no machine can map (but whose arithmetic does not overflow).
const UNALLOCATABLE: usize = usize::MAX / 2;

/// c03_parent_switch_failure_cascades.py: when the switch to a finishing greenlet's parent
/// fails, the failure goes on to the next parent. Python's parent has no `run`; here the
/// parent's stack cannot be allocated. The parent stays unstarted (not dead, not active) and
/// its `run` is never called.
#[test]
fn r5_3_parent_that_cannot_start_passes_error_on() {
    let ran = Rc::new(RefCell::new(false));
    let g1 = Greenlet::builder().stack_size(UNALLOCATABLE).build({
        let ran = ran.clone();
        move |_| {
            *ran.borrow_mut() = true;
            Ok(())
        }
    });
    let g2 = Greenlet::builder().parent(&g1).build(|_| Ok(()));
    match g2.switch(()) {
        Err(Error::StackAllocation { size, .. }) => assert_eq!(size, UNALLOCATABLE),
        other => panic!("expected Error::StackAllocation, got {other:?}"),
    }
    assert_eq!(
        (g1.is_dead(), g1.is_active(), g1.is_started(), g2.is_dead()),
        (false, false, false, true)
    );
    assert!(!*ran.borrow());

    // Switching to it directly fails in the caller, before any transfer; it stays unstarted.
    let err = g1.switch(()).unwrap_err();
    assert!(matches!(err, Error::StackAllocation { .. }), "{err:?}");
    assert!(!g1.is_started());
    assert!(!*ran.borrow());
    assert!(getcurrent().is_current() && getcurrent().is_main());

    // The failure goes to the *next* parent, which need not be main: here a suspended
    // greenlet that catches it.
    let main = getcurrent();
    let p = Greenlet::new({
        let main = main.clone();
        move |_| match main.switch("p waiting") {
            Err(Error::StackAllocation { .. }) => Ok("p caught StackAllocation"),
            Err(_) => Ok("p caught another error"),
            Ok(_) => Ok("p resumed with a value"),
        }
    });
    assert_eq!(
        p.switch(()).unwrap().downcast::<&str>().unwrap(),
        "p waiting"
    );
    let cannot_start = Greenlet::builder()
        .parent(&p)
        .stack_size(UNALLOCATABLE)
        .build(|_| Ok(()));
    let c = Greenlet::builder()
        .parent(&cannot_start)
        .build(|_| Ok("c result"));
    assert_eq!(
        c.switch(()).unwrap().downcast::<&str>().unwrap(),
        "p caught StackAllocation"
    );
    assert!(c.is_dead() && p.is_dead() && !cannot_start.is_started());
}

/// The same rule at the edge of the size range: a stack size so large that rounding it up to
/// whole pages overflows cannot be allocated either, and must be reported the same way
/// (`Error::StackAllocation`, documented on `Builder::stack_size`), not by a panic.
#[test]
fn r5_3_stack_size_max_is_an_allocation_error() {
    let g = Greenlet::builder().stack_size(usize::MAX).build(|_| Ok(()));
    let result = panic::catch_unwind(AssertUnwindSafe(|| g.switch(())));
    match result {
        Ok(Err(Error::StackAllocation { size, .. })) => assert_eq!(size, usize::MAX),
        Ok(other) => panic!("expected Error::StackAllocation, got {other:?}"),
        Err(payload) => panic!(
            "switch panicked instead of returning Error::StackAllocation: {}",
            panic_message(payload.as_ref())
        ),
    }
    assert!(!g.is_started());
}

/// §5.3 with the parent's stack size at `usize::MAX`: the parent is started from inside the
/// finishing child (on the child's stack), so the failure must come back as an error for the
/// next parent there too, leaving the runtime consistent. Runs in a child process because a
/// failure here can corrupt the thread's greenlet state and crash the process.
#[test]
fn r5_3_parent_with_stack_size_max_passes_error_on() {
    if support::in_child_process("r5_3_parent_with_stack_size_max_passes_error_on").is_some() {
        return;
    }
    let g1 = Greenlet::builder().stack_size(usize::MAX).build(|_| Ok(()));
    let g2 = Greenlet::builder().parent(&g1).build(|_| Ok(()));
    let result = panic::catch_unwind(AssertUnwindSafe(|| g2.switch(())));
    let main = getcurrent();
    assert!(
        main.is_main() && !main.is_dead(),
        "getcurrent() after the failed start is {main:?}, not the live main greenlet"
    );
    match result {
        Ok(Err(Error::StackAllocation { .. })) => {}
        Ok(other) => panic!("expected Error::StackAllocation, got {other:?}"),
        Err(payload) => panic!(
            "switch panicked instead of returning Error::StackAllocation: {}",
            panic_message(payload.as_ref())
        ),
    }
    assert!(g2.is_dead() && !g1.is_started());
    assert_eq!(
        Greenlet::new(|_| Ok(5))
            .switch(())
            .unwrap()
            .downcast::<i32>()
            .unwrap(),
        5
    );
}

/// c01 again, with a panic instead of an error: a panic escaping `run` kills the greenlet and
/// resumes unwinding in the parent, where `catch_unwind` catches it; it goes to the parent,
/// not to the greenlet that switched in last.
#[test]
fn r5_4_panic_goes_to_parent() {
    let out = Log::new();
    let g = Greenlet::new(|_| -> Result<(), Error> { panic!("k") });
    match panic::catch_unwind(AssertUnwindSafe(|| g.switch(()))) {
        Err(payload) => out.say(format!(
            "main caught panic {:?} {}",
            panic_message(payload.as_ref()),
            g.is_dead()
        )),
        Ok(r) => out.say(format!("no panic: {r:?}")),
    }
    let main = getcurrent();
    let p = Greenlet::new({
        let main = main.clone();
        move |_| match panic::catch_unwind(AssertUnwindSafe(|| main.switch("p waiting"))) {
            Err(payload) => Ok(format!(
                "p caught panic {:?}",
                panic_message(payload.as_ref())
            )),
            Ok(r) => Ok(format!("p resumed with {r:?}")),
        }
    });
    out.say(p.switch(()).unwrap().downcast::<&str>().unwrap());
    let c = Greenlet::builder()
        .parent(&p)
        .build(|_| -> Result<(), Error> { panic!("k") });
    // main switches to c; c panics; the panic unwinds in p; p returns to main normally.
    out.say(c.switch(()).unwrap().downcast::<String>().unwrap());
    out.say(format!("{} {}", c.is_dead(), p.is_dead()));
    assert_eq!(
        out.lines(),
        [
            "main caught panic \"k\" true",
            "p waiting",
            "p caught panic \"k\"",
            "true true",
        ]
    );
}

/// A panic payload that is not a string, to check it arrives as the very same payload.
#[derive(Debug, PartialEq)]
struct NameError(&'static str);

/// Records its label when dropped: shows which frames a panic unwound.
struct Guard(Log, &'static str);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.say(format!("drop {}", self.1));
    }
}

/// c05_traceback.py: the panic resumes unwinding at the parent's pending `switch` call (main's
/// `gr1.switch`), carrying the original payload; the intermediate greenlet `gr1`, which
/// switched to the panicking `gr2`, is not unwound: it stays suspended.
#[test]
fn r5_5_panic_resumes_unwinding_in_parent() {
    let out = Log::new();
    let gr2_cell: Rc<OnceCell<Greenlet>> = Rc::new(OnceCell::new());
    let gr1 = Greenlet::new({
        let out = out.clone();
        let gr2 = gr2_cell.clone();
        move |_| {
            let _guard = Guard(out.clone(), "gr1 frame");
            out.say("gr1 switches to gr2");
            gr2.get().unwrap().switch(())?;
            out.say("gr1 resumed");
            Ok(())
        }
    });
    let gr2 = Greenlet::new({
        let out = out.clone();
        move |_| -> Result<(), Error> {
            let _guard = Guard(out.clone(), "gr2 frame");
            out.say("gr2 panics");
            panic::panic_any(NameError("this_should_be_a_name_error"))
        }
    });
    gr2_cell.set(gr2.clone()).unwrap();
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        let _guard = Guard(out.clone(), "main frame");
        let _ = gr1.switch(());
        out.say("main after switch (not reached)");
    }));
    let payload = caught.expect_err("the panic reaches main");
    assert_eq!(
        payload.downcast_ref::<NameError>(),
        Some(&NameError("this_should_be_a_name_error"))
    );
    out.say(format!(
        "gr1 dead {} active {}, gr2 dead {}",
        gr1.is_dead(),
        gr1.is_active(),
        gr2.is_dead()
    ));
    assert_eq!(
        out.lines(),
        [
            "gr1 switches to gr2",
            "gr2 panics",
            "drop gr2 frame",
            "drop main frame",
            "gr1 dead false active true, gr2 dead true",
        ]
    );

    // The runtime is consistent afterwards: main is current and switching works.
    let main = getcurrent();
    assert!(main.is_current() && main.is_main());
    assert_eq!(
        Greenlet::new(|_| Ok(7))
            .switch(())
            .unwrap()
            .downcast::<i32>()
            .unwrap(),
        7
    );
    // gr1 can still be resumed; its pending switch returns normally.
    out.take();
    gr1.switch("resume").unwrap();
    assert_eq!(out.lines(), ["gr1 resumed", "drop gr1 frame"]);
    assert!(gr1.is_dead());
}
