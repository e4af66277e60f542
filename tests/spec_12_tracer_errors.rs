//! Spec §12: a tracer that fails, and tracers that switch (no reentrancy guard).
//!
//! Not applicable: the `__context__` check of §12.3 (Rust errors have no implicit chaining; the
//! replacement is tested). §12.11's scripts are in `spec_14_upstream.rs`. Added for Rust: a
//! panicking tracer behaves as a failing one, with the panic resuming in the target.

mod support;

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use greenlet::{
    getcurrent, gettrace, set_kill_hook, settrace, Error, Event, GreenletExit, KillFailure, Tracer,
};
use support::{kind, named, nm, trace_line, Log};

/// The examples' failing tracer: prints the event, then raises `TraceError(event)`.
fn failing_tracer(log: &Log, fail_when: impl Fn(&Event) -> bool + 'static) -> Tracer {
    let log = log.clone();
    Tracer::new(move |event: &Event| {
        log.say(trace_line(event));
        if fail_when(event) {
            Err(Error::msg(format!("TraceError('{}')", kind(event))))
        } else {
            Ok(())
        }
    })
}

#[test]
fn r12_1_tracer_error_on_switch_into_suspended_is_raised_in_the_target() {
    let log = Log::new();
    let main = getcurrent();
    let g = named("g", {
        let (log, main) = (log.clone(), main.clone());
        move |_| match main.switch("suspended") {
            Ok(v) => panic!("g resumed normally with {v:?}"),
            Err(e) => {
                log.say(format!(
                    "g: switch() raised {e} | tracer now {:?}",
                    gettrace()
                ));
                Ok("g handled it")
            }
        }
    });
    log.say(g.switch(()).unwrap().downcast::<&str>().unwrap());
    settrace(Some(failing_tracer(&log, |_| true)));
    let got = g.switch("value that is lost").unwrap();
    log.say(format!("main got {}", got.downcast::<&str>().unwrap()));
    log.say(format!("gettrace: {:?}", gettrace()));
    assert_eq!(
        log.lines(),
        [
            "suspended",
            "TRACE switch main -> g | current: g",
            "g: switch() raised TraceError('switch') | tracer now None",
            "main got g handled it",
            "gettrace: None",
        ]
    );
}

#[test]
fn r12_2_tracer_error_on_start_kills_without_running() {
    let log = Log::new();
    let ran = Rc::new(Cell::new(false));
    let g = named("g", {
        let ran = ran.clone();
        move |_| {
            ran.set(true);
            Ok(())
        }
    });
    settrace(Some(failing_tracer(&log, |_| true)));
    let err = g.switch((1, 2)).unwrap_err();
    log.say(format!(
        "main caught {err} | g.dead: {} | gettrace: {:?}",
        g.is_dead(),
        gettrace()
    ));
    assert!(!ran.get(), "run must not be called");
    assert_eq!(
        log.lines(),
        [
            "TRACE switch main -> g | current: g",
            "main caught TraceError('switch') | g.dead: true | gettrace: None",
        ]
    );
}

#[test]
fn r12_3_tracer_error_replaces_the_thrown_error() {
    let log = Log::new();
    let main = getcurrent();
    let g = named("g", {
        let (log, main) = (log.clone(), main.clone());
        move |_| {
            let e = main.switch(()).unwrap_err();
            log.say(format!("g sees {e}"));
            Ok("g done")
        }
    });
    g.switch(()).unwrap();
    settrace(Some(failing_tracer(&log, |_| true)));
    let got = g.throw("KeyError('original')").unwrap();
    log.say(format!("main got {}", got.downcast::<&str>().unwrap()));
    assert_eq!(
        log.lines(),
        [
            "TRACE throw main -> g | current: g",
            "g sees TraceError('throw')",
            "main got g done",
        ]
    );
}

#[test]
fn r12_4_tracer_error_after_run_returns_reaches_the_parent() {
    let log = Log::new();
    let g = named("g", |_| Ok("lost return value"));
    settrace(Some(failing_tracer(&log, |e| nm(e.target()) == "main")));
    let err = g.switch(()).unwrap_err();
    log.say(format!(
        "main caught {err} | g.dead: {} | gettrace: {:?}",
        g.is_dead(),
        gettrace()
    ));
    let lines: Vec<String> = log
        .lines()
        .into_iter()
        .map(|l| l.split(" | current").next().unwrap().to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "TRACE switch main -> g",
            "TRACE switch g -> main",
            "main caught TraceError('switch') | g.dead: true | gettrace: None",
        ]
    );
}

#[test]
fn r12_5_tracer_error_on_self_switch_comes_out_of_switch() {
    let log = Log::new();
    settrace(Some(failing_tracer(&log, |_| true)));
    let err = getcurrent().switch(1).unwrap_err();
    assert_eq!(err.to_string(), "TraceError('switch')");
    assert_eq!(gettrace(), None);
    assert_eq!(log.lines(), ["TRACE switch main -> main | current: main"]);
}

#[test]
fn r12_6_tracer_greenletexit_on_start_reaches_the_parent_as_a_value() {
    let g = named("g", |_| -> Result<(), Error> { panic!("never runs") });
    settrace(Some(Tracer::new(|_| {
        Err(GreenletExit::with_message("from tracer").into())
    })));
    let got = g.switch(()).unwrap();
    assert_eq!(
        got.downcast::<GreenletExit>().unwrap(),
        GreenletExit::with_message("from tracer")
    );
    assert!(g.is_dead());
    assert_eq!(gettrace(), None);
}

#[test]
fn r12_7_tracer_error_during_a_kill_replaces_the_exit_and_is_reported() {
    let log = Log::new();
    let main = getcurrent();
    let g = named("g", {
        let (log, main) = (log.clone(), main.clone());
        move |_| {
            let e = main.switch(()).unwrap_err();
            log.say(format!("g sees {e}"));
            Err::<(), _>(e)
        }
    });
    g.switch(()).unwrap();
    let sink = log.clone();
    set_kill_hook(Some(Rc::new(move |_, failure: &KillFailure| {
        if let KillFailure::Error(e) = failure {
            sink.say(format!("unraisable: {e}"));
        }
    })));
    settrace(Some(failing_tracer(&log, |_| true)));
    drop(g);
    log.say(format!("after del; gettrace: {:?}", gettrace()));
    set_kill_hook(None);
    assert_eq!(
        log.lines(),
        [
            "TRACE throw main -> g | current: g",
            "g sees TraceError('throw')",
            "unraisable: TraceError('throw')",
            "after del; gettrace: None",
        ]
    );
}

#[test]
fn r12_8_switches_inside_the_tracer_are_traced() {
    let log = Log::new();
    let depth = Rc::new(Cell::new(0_usize));
    let done_inner = Rc::new(Cell::new(false));
    let sink = log.clone();
    settrace(Some(Tracer::new(move |event: &Event| {
        let indent = "  ".repeat(depth.get());
        sink.say(format!(
            "{indent}TRACE {} {} -> {} | current: {}",
            kind(event),
            nm(event.origin()),
            nm(event.target()),
            nm(&getcurrent())
        ));
        if !done_inner.replace(true) {
            depth.set(depth.get() + 1);
            let inner = named("inner", |_| Ok("inner result"));
            let r = inner.switch(())?;
            let indent = "  ".repeat(depth.get());
            sink.say(format!(
                "{indent}tracer: inner switch returned {:?}",
                r.downcast::<&str>().unwrap()
            ));
            depth.set(depth.get() - 1);
        }
        Ok(())
    })));
    let g = named("g", |_| Ok("g result"));
    let got = g.switch(()).unwrap();
    settrace(None);
    log.say(format!("main got {}", got.downcast::<&str>().unwrap()));
    assert_eq!(
        log.lines(),
        [
            "TRACE switch main -> g | current: g",
            "  TRACE switch g -> inner | current: inner",
            "  TRACE switch inner -> g | current: g",
            "  tracer: inner switch returned \"inner result\"",
            "TRACE switch g -> main | current: main",
            "main got g result",
        ]
    );
}

#[test]
fn r12_9_settrace_inside_the_tracer_applies_from_the_next_transfer() {
    let log = Log::new();
    let main = getcurrent();
    let second = {
        let log = log.clone();
        Tracer::new(move |e: &Event| {
            log.say(format!(
                "second {} {} -> {}",
                kind(e),
                nm(e.origin()),
                nm(e.target())
            ));
            Ok(())
        })
    };
    let first_slot: Rc<std::cell::OnceCell<Tracer>> = Rc::new(std::cell::OnceCell::new());
    let first = {
        let (log, first_slot) = (log.clone(), first_slot.clone());
        Tracer::new(move |e: &Event| {
            log.say(format!(
                "first  {} {} -> {}",
                kind(e),
                nm(e.origin()),
                nm(e.target())
            ));
            let previous = settrace(Some(second.clone()));
            log.say(format!(
                "  settrace(second) returned first? {}",
                previous.as_ref() == first_slot.get()
            ));
            Ok(())
        })
    };
    first_slot.set(first.clone()).unwrap();
    let g = named("g", move |_| main.switch(()));
    settrace(Some(first));
    g.switch(()).unwrap();
    g.switch(()).unwrap();
    settrace(None);
    assert_eq!(
        log.lines(),
        [
            "first  switch main -> g",
            "  settrace(second) returned first? true",
            "second switch g -> main",
            "second switch main -> g",
            "second switch g -> main",
        ]
    );
}

#[test]
fn r12_10_the_value_is_captured_before_the_tracer_runs() {
    let log = Log::new();
    let main = getcurrent();
    let armed = Rc::new(Cell::new(false));
    let h = named("h", {
        let main = main.clone();
        move |_| main.switch("from h")
    });
    let sink = log.clone();
    let trigger = armed.clone();
    settrace(Some(Tracer::new(move |e: &Event| {
        sink.say(trace_line(e));
        if trigger.replace(false) {
            let r = h.switch("from tracer")?;
            sink.say(format!(
                "  tracer: h.switch returned {:?}",
                r.downcast::<&str>().unwrap()
            ));
        }
        Ok(())
    })));
    let g = named("g", {
        let main = main.clone();
        move |_| {
            armed.set(true);
            main.switch("original value from g")
        }
    });
    let got = g.switch(()).unwrap();
    settrace(None);
    log.say(format!("main got {:?}", got.downcast::<&str>().unwrap()));
    assert_eq!(
        log.lines(),
        [
            "TRACE switch main -> g | current: g",
            "TRACE switch g -> main | current: main",
            "TRACE switch main -> h | current: h",
            "TRACE switch h -> main | current: main",
            "  tracer: h.switch returned \"from h\"",
            "main got \"original value from g\"",
        ]
    );
}

#[test]
fn rust_panicking_tracer_is_removed_and_the_panic_resumes_in_the_target() {
    let ran = Rc::new(Cell::new(false));
    let g = named("g", {
        let ran = ran.clone();
        move |_| {
            ran.set(true);
            Ok(())
        }
    });
    settrace(Some(Tracer::new(|e: &Event| {
        if !e.target().is_main() {
            panic!("tracer panic");
        }
        Ok(())
    })));
    // The panic is raised in g (which dies without running) and carried to main.
    let caught = catch_unwind(AssertUnwindSafe(|| g.switch(()))).unwrap_err();
    assert_eq!(greenlet::panic_message(caught.as_ref()), "tracer panic");
    assert!(!ran.get());
    assert!(g.is_dead());
    assert_eq!(gettrace(), None);
}
