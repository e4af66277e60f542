//! Spec §11: which trace events fire, when, and with which origin and target.
//!
//! Not applicable (spec R1): §11.9 (`sys.exc_info()` inside the tracer) and §11.10
//! (`sys.setprofile` suspended while the tracer runs) are CPython interpreter state. The
//! cross-thread half of §11.8 cannot be written in Rust (handles are `!Send`); its other
//! half is tested with the Rust counterpart of a greenlet that cannot start: one whose stack
//! cannot be allocated.

mod support;

use greenlet::{getcurrent, settrace, Error, Event, Greenlet, GreenletExit, Recorder, Tracer};
use support::{kind, named, nm, printing_tracer, Log};

/// A stack size no machine can map: starting such a greenlet fails before any transfer.
const IMPOSSIBLE_STACK: usize = 1 << 62;

#[test]
fn r11_1_one_event_per_transfer_in_the_target() {
    let log = Log::new();
    let main = getcurrent();
    let sink = log.clone();
    settrace(Some(Tracer::new(move |event: &Event| {
        sink.say(format!(
            "TRACE {} {} -> {} | current: {} | origin dead: {}",
            kind(event),
            nm(event.origin()),
            nm(event.target()),
            nm(&getcurrent()),
            event.origin().is_dead()
        ));
        Ok(())
    })));
    let g = named("g", {
        let (log, main) = (log.clone(), main.clone());
        move |x| {
            log.say(format!(
                "run() called with {}",
                x.downcast::<&str>().unwrap()
            ));
            let y = main.switch("to main")?;
            log.say(format!("resumed with {}", y.downcast::<&str>().unwrap()));
            Ok("ret")
        }
    });
    let got = g.switch("arg").unwrap();
    log.say(format!("main got {}", got.downcast::<&str>().unwrap()));
    let got = g.switch("again").unwrap();
    log.say(format!("main got {}", got.downcast::<&str>().unwrap()));
    let h = named("h", |_| -> Result<(), Error> {
        Err(Error::msg("ValueError('boom')"))
    });
    let err = h.switch(()).unwrap_err();
    log.say(format!("main caught {err}"));
    settrace(None);
    assert_eq!(
        log.lines(),
        [
            "TRACE switch main -> g | current: g | origin dead: false",
            "run() called with arg",
            "TRACE switch g -> main | current: main | origin dead: false",
            "main got to main",
            "TRACE switch main -> g | current: g | origin dead: false",
            "resumed with again",
            "TRACE switch g -> main | current: main | origin dead: true",
            "main got ret",
            "TRACE switch main -> h | current: h | origin dead: false",
            "TRACE throw h -> main | current: main | origin dead: true",
            "main caught ValueError('boom')",
        ]
    );
}

#[test]
fn r11_2_event_kind_follows_what_the_transfer_carries() {
    let log = Log::new();
    let main = getcurrent();
    let a = named("a", {
        let main = main.clone();
        move |_| match main.switch(()) {
            Err(e) if e.to_string() == "KeyError" => Ok("caught KeyError"),
            other => panic!("unexpected {other:?}"),
        }
    });
    let no_catch = |main: &Greenlet| {
        let main = main.clone();
        move |_| main.switch(())
    };
    let b = named("b", no_catch(&main));
    let c = named("c", no_catch(&main));
    for g in [&a, &b, &c] {
        g.switch(()).unwrap();
    }
    settrace(Some(printing_tracer(&log)));
    log.say("-- a.throw(KeyError): a catches it and returns");
    let got = a.throw("KeyError").unwrap();
    log.say(format!("main got {:?}", got.downcast::<&str>().unwrap()));
    log.say("-- b.throw(ValueError): b does not catch it");
    let err = b.throw("ValueError").unwrap_err();
    log.say(format!("main caught {err}"));
    log.say("-- c.throw(): GreenletExit escapes c");
    let got = c.kill().unwrap();
    log.say(format!(
        "main got {}",
        got.downcast::<GreenletExit>().unwrap()
    ));
    settrace(None);
    assert_eq!(
        log.lines(),
        [
            "-- a.throw(KeyError): a catches it and returns",
            "TRACE throw main -> a | current: a",
            "TRACE switch a -> main | current: main",
            "main got \"caught KeyError\"",
            "-- b.throw(ValueError): b does not catch it",
            "TRACE throw main -> b | current: b",
            "TRACE throw b -> main | current: main",
            "main caught ValueError",
            "-- c.throw(): GreenletExit escapes c",
            "TRACE throw main -> c | current: c",
            "TRACE switch c -> main | current: main",
            "main got GreenletExit",
        ]
    );
}

#[test]
fn r11_3_throw_into_unstarted_dead_and_current() {
    let log = Log::new();
    let main = getcurrent();
    settrace(Some(printing_tracer(&log)));
    log.say("-- throw ValueError into unstarted u");
    let u = named("u", |_| -> Result<(), Error> {
        panic!("run must not be called")
    });
    let err = u.throw("ValueError").unwrap_err();
    log.say(format!("main caught {err}"));
    log.say("-- throw() into unstarted u2");
    let u2 = named("u2", |_| -> Result<(), Error> {
        panic!("run must not be called")
    });
    let got = u2.kill().unwrap();
    log.say(format!(
        "main got {}",
        got.downcast::<GreenletExit>().unwrap()
    ));
    log.say("-- throw() into dead u2");
    let got = u2.kill().unwrap();
    log.say(format!(
        "main got {}",
        got.downcast::<GreenletExit>().unwrap()
    ));
    log.say("-- throw ValueError into dead u2");
    let err = u2.throw("ValueError").unwrap_err();
    log.say(format!("main caught {err}"));
    log.say("-- main.throw(KeyError) (throw into self)");
    let err = main.throw("KeyError").unwrap_err();
    log.say(format!("main caught {err}"));
    settrace(None);
    assert!(u.is_dead() && u2.is_dead());
    assert_eq!(
        log.lines(),
        [
            "-- throw ValueError into unstarted u",
            "TRACE throw main -> u | current: u",
            "TRACE throw u -> main | current: main",
            "main caught ValueError",
            "-- throw() into unstarted u2",
            "TRACE throw main -> u2 | current: u2",
            "TRACE switch u2 -> main | current: main",
            "main got GreenletExit",
            "-- throw() into dead u2",
            "TRACE switch main -> main | current: main",
            "main got GreenletExit",
            "-- throw ValueError into dead u2",
            "TRACE throw main -> main | current: main",
            "main caught ValueError",
            "-- main.throw(KeyError) (throw into self)",
            "TRACE throw main -> main | current: main",
            "main caught KeyError",
        ]
    );
}

#[test]
fn r11_4_self_switch_and_switch_to_dead_name_the_real_target() {
    let log = Log::new();
    let main = getcurrent();
    let d = named("d", |_| Ok(()));
    d.switch(()).unwrap();
    settrace(Some(printing_tracer(&log)));
    log.say("-- main.switch(1)");
    let got = main.switch(1).unwrap();
    log.say(format!("got {}", got.downcast::<i32>().unwrap()));
    log.say("-- d.switch(2) (d is dead, parent main)");
    let got = d.switch(2).unwrap();
    log.say(format!("got {}", got.downcast::<i32>().unwrap()));
    log.say("-- child switching to itself");
    let c = named("c", |_| {
        getcurrent().switch("self")?;
        Ok("end")
    });
    let got = c.switch(()).unwrap();
    log.say(format!("got {}", got.downcast::<&str>().unwrap()));
    settrace(None);
    assert_eq!(
        log.lines(),
        [
            "-- main.switch(1)",
            "TRACE switch main -> main | current: main",
            "got 1",
            "-- d.switch(2) (d is dead, parent main)",
            "TRACE switch main -> main | current: main",
            "got 2",
            "-- child switching to itself",
            "TRACE switch main -> c | current: c",
            "TRACE switch c -> c | current: c",
            "TRACE switch c -> main | current: main",
            "got end",
        ]
    );
}

#[test]
fn r11_5_error_climbing_the_parent_chain_fires_one_throw_per_hop() {
    let main = getcurrent();
    let p = named("p", move |_| main.switch(()));
    p.switch(()).unwrap();
    let c = Greenlet::builder()
        .name("c")
        .parent(&p)
        .build(|_| -> Result<(), Error> { Err(Error::msg("KeyError('x')")) });
    let recorder = Recorder::install();
    let err = c.switch(()).unwrap_err();
    assert_eq!(err.to_string(), "KeyError('x')");
    assert!(c.is_dead() && p.is_dead());
    assert_eq!(
        recorder.lines(),
        ["switch main -> c", "throw c -> p", "throw p -> main"]
    );
}

#[test]
fn r11_6_child_finishing_into_an_unstarted_parent() {
    let log = Log::new();
    let p = named("p", |x| {
        Ok(format!("p got {}", x.downcast::<i32>().unwrap()))
    });
    let c = Greenlet::builder().name("c").parent(&p).build(|_| Ok(42));
    settrace(Some(printing_tracer(&log)));
    let got = c.switch(()).unwrap();
    log.say(got.downcast::<String>().unwrap());
    log.say("-- parent that cannot start: the error cascades to main");
    let p2 = Greenlet::builder()
        .name("p2")
        .stack_size(IMPOSSIBLE_STACK)
        .build(|_| Ok(()));
    let c2 = Greenlet::builder().name("c2").parent(&p2).build(|_| Ok(42));
    let err = c2.switch(()).unwrap_err();
    assert!(matches!(err, Error::StackAllocation { .. }), "{err:?}");
    log.say("main caught StackAllocation");
    settrace(None);
    assert!(c2.is_dead() && !p2.is_started() && !p2.is_dead());
    let lines: Vec<String> = log
        .lines()
        .into_iter()
        .map(|l| l.split(" | ").next().unwrap().to_string())
        .collect();
    assert_eq!(
        lines,
        [
            "TRACE switch main -> c",
            "TRACE switch c -> p",
            "TRACE switch p -> main",
            "p got 42",
            "-- parent that cannot start: the error cascades to main",
            "TRACE switch main -> c2",
            "TRACE throw c2 -> main",
            "main caught StackAllocation",
        ]
    );
}

#[test]
fn r11_7_kill_on_last_drop_is_traced_as_a_throw() {
    let log = Log::new();
    let main = getcurrent();
    let g = named("g", {
        let (log, main) = (log.clone(), main.clone());
        move |_| match main.switch(()) {
            Err(e) if e.is_exit() => {
                log.say("g killed");
                Ok(())
            }
            other => panic!("unexpected {other:?}"),
        }
    });
    g.switch(()).unwrap();
    settrace(Some(printing_tracer(&log)));
    log.say("-- del g");
    drop(g);
    log.say("-- killed from inside child k");
    let k = named("k", |_| {
        let v = named("v", |_| {
            // Not `getcurrent().parent()...switch()` in one statement: that temporary handle
            // to v would live on v's stack across the switch and keep v alive.
            let parent = getcurrent().parent().unwrap();
            let _ = parent.switch(());
            Ok(())
        });
        v.switch(())?;
        drop(v);
        Ok("k done")
    });
    let got = k.switch(()).unwrap();
    log.say(format!("main got {}", got.downcast::<&str>().unwrap()));
    settrace(None);
    assert_eq!(
        log.lines(),
        [
            "-- del g",
            "TRACE throw main -> g | current: g",
            "g killed",
            "TRACE switch g -> main | current: main",
            "-- killed from inside child k",
            "TRACE switch main -> k | current: k",
            "TRACE switch k -> v | current: v",
            "TRACE switch v -> k | current: k",
            "TRACE throw k -> v | current: v",
            "TRACE switch v -> k | current: k",
            "TRACE switch k -> main | current: main",
            "main got k done",
        ]
    );
}

#[test]
fn r11_8_no_event_when_a_switch_fails_before_any_transfer() {
    let recorder = Recorder::install();
    let g = Greenlet::builder()
        .stack_size(IMPOSSIBLE_STACK)
        .build(|_| Ok(()));
    let err = g.switch(()).unwrap_err();
    assert!(matches!(err, Error::StackAllocation { .. }), "{err:?}");
    let err = g.throw("ValueError").unwrap_err();
    assert!(matches!(err, Error::StackAllocation { .. }), "{err:?}");
    assert!(!g.is_started());
    assert_eq!(recorder.events(), []);
}
