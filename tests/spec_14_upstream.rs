//! Spec §14: ports of upstream greenlet's tracing tests (`TestGreenletTracing`) and of the
//! three reentrancy scripts of `TestBrokenGreenlets` (§12.11: u01, u02, u03), with the
//! transcripts of their observed output.
//!
//! Not applicable: `TestPythonTracing` (CPython's `sys.setprofile`, spec R1). The
//! `test_interpreter_shutdown` cases' Rust counterpart (tracing calls while a thread is being
//! torn down) is `settrace_and_gettrace_during_thread_teardown_do_not_crash`.

mod support;

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;

use greenlet::{
    getcurrent, gettrace, settrace, Error, Event, Greenlet, InjectedFailure, RecordedEvent,
    Recorder, Tracer,
};
use support::{words, Log};

#[test]
fn test_a_greenlet_tracing() {
    let main = getcurrent();
    let recorder = Recorder::install();
    let g1 = Greenlet::new(|_| Ok(()));
    g1.switch(()).unwrap();
    let g2 = Greenlet::new(|_| -> Result<(), Error> { Err(Error::msg("SomeError")) });
    assert_eq!(g2.switch(()).unwrap_err().to_string(), "SomeError");
    assert_eq!(
        recorder.events(),
        [
            RecordedEvent::switch(&main, &g1),
            RecordedEvent::switch(&g1, &main),
            RecordedEvent::switch(&main, &g2),
            RecordedEvent::throw(&g2, &main),
        ]
    );
}

#[test]
fn test_b_exception_disables_tracing() {
    let main = getcurrent();
    let g = Greenlet::new({
        let main = main.clone();
        move |_| main.switch(())
    });
    g.switch(()).unwrap();
    let recorder = Recorder::failing_on(1);
    let err = g.switch(()).unwrap_err();
    assert_eq!(
        err.downcast_ref::<InjectedFailure>(),
        Some(&InjectedFailure { event: 1 })
    );
    assert!(g.is_dead(), "g did not catch the tracer's error");
    assert_eq!(gettrace(), None);
    assert_eq!(recorder.events(), [RecordedEvent::switch(&main, &g)]);
}

#[test]
fn test_set_same_tracer_twice() {
    let recorder = Recorder::install();
    let tracer = recorder.tracer().clone();
    assert_eq!(settrace(Some(tracer.clone())), Some(tracer.clone()));
    Greenlet::new(|_| Ok(())).switch(()).unwrap();
    assert_eq!(recorder.events().len(), 2);
    drop(recorder);
    assert_eq!(gettrace(), None);
}

/// The u-scripts' tracer: `TRACE`, maybe a switch, `LEAVE TRACE`, printing greenlets as
/// Python's repr ends them (`suspended active started main>`).
fn reentrant_tracer(log: &Log, action: impl Fn() -> Result<(), Error> + 'static) -> Tracer {
    let log = log.clone();
    Tracer::new(move |e: &Event| {
        let args = |e: &Event| format!("({}, {})", words(e.origin()), words(e.target()));
        log.say(format!("TRACE {} {}", e.kind(), args(e)));
        action()?;
        log.say(format!("\tLEAVE TRACE {} {}", e.kind(), args(e)));
        Ok(())
    })
}

/// The Python transcripts with `<greenlet.greenlet object at 0xADDR (otid=0xADDR) ` removed.
fn python_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.replace("<greenlet.greenlet object at 0xADDR (otid=0xADDR) ", ""))
        .collect()
}

#[test]
fn u01_fail_switch_two_greenlets() {
    let log = Log::new();
    let g2_cell: Rc<OnceCell<Greenlet>> = Rc::default();
    let switch_to_g2 = Rc::new(Cell::new(false));
    settrace(Some(reentrant_tracer(&log, {
        let (g2, armed) = (g2_cell.clone(), switch_to_g2.clone());
        move || {
            if armed.replace(false) {
                g2.get().unwrap().switch(())?;
            }
            Ok(())
        }
    })));
    let g1 = Greenlet::new({
        let (log, armed) = (log.clone(), switch_to_g2.clone());
        move |_| {
            log.say("In g1_run");
            armed.set(true);
            let parent = getcurrent().parent().unwrap();
            parent.switch(())?;
            log.say("Return to g1_run");
            log.say("Falling off end of g1_run");
            Ok(())
        }
    });
    let g2 = Greenlet::new({
        let (log, g1) = (log.clone(), g1.clone());
        move |_| {
            g1.switch(())?;
            log.say("Falling off end of g2");
            Ok(())
        }
    });
    g2_cell.set(g2.clone()).unwrap();
    g1.switch(()).unwrap();
    log.say("Falling off end of main");
    g2.switch(()).unwrap();
    settrace(None);
    let expected = python_lines(include_str!("spec_data/u01_fail_switch_two_greenlets.out"));
    assert_eq!(log.lines(), expected);
}

#[test]
fn u02_fail_switch_three_greenlets() {
    let log = Log::new();
    settrace(Some(reentrant_tracer(&log, || Ok(()))));
    // g1_run takes no argument: being started with one is its error (Python's TypeError).
    let g1 = Greenlet::new(|arg: greenlet::Value| -> Result<(), Error> {
        if !arg.is_unit() {
            return Err(Error::msg(
                "TypeError: g1_run() takes 0 positional arguments but 1 was given",
            ));
        }
        Ok(())
    });
    let err = g1.switch(1).unwrap_err();
    settrace(None);
    assert!(err.to_string().contains("TypeError"));
    assert!(err.to_string().contains("positional arguments"));
    let expected = python_lines(include_str!(
        "spec_data/u02_fail_switch_three_greenlets.out"
    ));
    // The Python script then dies with the traceback; the trace lines are what it printed.
    let trace_lines: Vec<String> = expected
        .into_iter()
        .take_while(|l| !l.starts_with("Traceback"))
        .collect();
    assert_eq!(log.lines(), trace_lines);
}

#[test]
fn u03_fail_switch_three_greenlets2() {
    let log = Log::new();
    let results: Rc<RefCell<Vec<(String, String)>>> = Rc::default();
    let record = {
        let results = results.clone();
        move |k: &str, v: &str| results.borrow_mut().push((k.into(), v.into()))
    };
    let show = |v: &greenlet::Value| match v.downcast_ref::<&str>() {
        Some(s) => (*s).to_string(),
        None if v.is_unit() => "()".to_string(),
        None => format!("{v:?}"),
    };
    let g2_cell: Rc<OnceCell<Greenlet>> = Rc::default();
    let switch_to_g2 = Rc::new(Cell::new(true));
    settrace(Some({
        let (g2, armed, record) = (g2_cell.clone(), switch_to_g2.clone(), record.clone());
        let inner = reentrant_tracer(&log, move || {
            if armed.replace(false) {
                g2.get().unwrap().switch("g2 from tracefunc")?;
            }
            Ok(())
        });
        Tracer::new(move |e: &Event| {
            record("trace", e.kind().as_str());
            inner.call(e)
        })
    }));
    let g1 = Greenlet::new({
        let (log, record) = (log.clone(), record.clone());
        move |arg| {
            record("g1 arg", &show(&arg));
            log.say("In g1_run");
            let parent = getcurrent().parent().unwrap();
            let from_parent = parent.switch("from g1_run")?;
            record("g1 from parent", &show(&from_parent));
            Ok("g1 done")
        }
    });
    let g2 = Greenlet::new({
        let (record, armed) = (record.clone(), switch_to_g2.clone());
        move |arg| {
            record("g2 arg", &show(&arg));
            let parent_handle = getcurrent().parent().unwrap();
            let from_parent = parent_handle.switch("from g2_run")?;
            armed.set(false);
            record("g2 from parent", &show(&from_parent));
            Ok("g2 done")
        }
    });
    g2_cell.set(g2.clone()).unwrap();

    let x = g1.switch("g1 from main").unwrap();
    record("main g1", &show(&x));
    log.say(format!("Back in main {}", show(&x)));
    let x = g1.switch("g2 from main").unwrap();
    record("main g2", &show(&x));
    log.say(format!("back in amain again {}", show(&x)));
    let x = g1.switch("g1 from main 2").unwrap();
    record("main g1.2", &show(&x));
    let x = g2.switch(()).unwrap();
    record("main g2.2", &show(&x));
    settrace(None);

    let rendered: Vec<String> = results
        .borrow()
        .iter()
        .map(|(k, v)| {
            if v == "()" {
                format!("('{k}', ())")
            } else {
                format!("('{k}', '{v}')")
            }
        })
        .collect();
    log.say(format!("RESULTS: [{}]", rendered.join(", ")));
    let expected = python_lines(include_str!(
        "spec_data/u03_fail_switch_three_greenlets2.out"
    ));
    assert_eq!(log.lines(), expected);
}

#[test]
fn settrace_and_gettrace_during_thread_teardown_do_not_crash() {
    struct CallsTracingInDrop;
    impl Drop for CallsTracingInDrop {
        fn drop(&mut self) {
            let _ = gettrace();
            let _ = settrace(Some(Tracer::new(|_| Ok(()))));
            Greenlet::new(|_| Ok(())).switch(()).unwrap();
        }
    }
    thread_local! {
        static LATE: RefCell<Option<CallsTracingInDrop>> = const { RefCell::new(None) };
    }
    std::thread::spawn(|| {
        // Greenlet state first, then the thread-local whose destructor uses it: destructors
        // run in reverse, so LATE's runs before the greenlet teardown; the other order is
        // covered by the thread that registers them the other way round.
        Greenlet::new(|_| Ok(())).switch(()).unwrap();
        LATE.with(|l| *l.borrow_mut() = Some(CallsTracingInDrop));
    })
    .join()
    .unwrap();
    std::thread::spawn(|| {
        LATE.with(|l| *l.borrow_mut() = Some(CallsTracingInDrop));
        Greenlet::new(|_| Ok(())).switch(()).unwrap();
    })
    .join()
    .unwrap();
}
