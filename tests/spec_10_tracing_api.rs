//! Spec §10: `settrace` / `gettrace`.
//!
//! Not applicable (spec R1, R5): the argument-count `TypeError`s of §10.1 and the non-callable
//! tracer of §10.6 (a `Tracer` is a closure by construction, checked at compile time); the
//! exact tuple shape of §10.4 becomes the `Event` enum, tested here.

mod support;

use std::sync::mpsc;

use greenlet::{getcurrent, gettrace, settrace, Event, EventKind, Greenlet, Tracer};
use support::{nm, printing_tracer, Log};

fn noop() -> Tracer {
    Tracer::new(|_| Ok(()))
}

#[test]
fn r10_1_settrace_returns_previous_and_none_removes() {
    let (t1, t2) = (noop(), noop());
    assert_eq!(gettrace(), None);
    assert_eq!(settrace(Some(t1.clone())), None);
    assert_eq!(gettrace(), Some(t1.clone()));
    assert_eq!(settrace(Some(t2.clone())), Some(t1.clone()));
    // The same tracer twice is fine (Python issue #332).
    assert_eq!(settrace(Some(t2.clone())), Some(t2.clone()));
    assert_eq!(settrace(None), Some(t2.clone()));
    assert_eq!(gettrace(), None);
    assert_eq!(settrace(None), None);
    assert_ne!(t1, t2, "tracers compare by identity");
}

#[test]
fn r10_2_tracer_is_per_thread() {
    let mine = noop();
    settrace(Some(mine.clone()));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tx.send(format!("initial gettrace in new thread: {:?}", gettrace()))
            .unwrap();
        let count = std::rc::Rc::new(std::cell::Cell::new(0));
        let seen = count.clone();
        settrace(Some(Tracer::new(move |event| {
            assert_eq!(event.kind(), EventKind::Switch);
            seen.set(seen.get() + 1);
            Ok(())
        })));
        Greenlet::new(|_| Ok(())).switch(()).unwrap();
        tx.send(format!("thread tracer events: {}", count.get()))
            .unwrap();
    })
    .join()
    .unwrap();
    let got: Vec<String> = rx.iter().collect();
    assert_eq!(
        got,
        [
            "initial gettrace in new thread: None",
            "thread tracer events: 2"
        ]
    );
    assert_eq!(gettrace(), Some(mine), "main thread tracer unchanged");
    settrace(None);
}

#[test]
fn r10_3_settrace_from_child_is_threadwide() {
    let log = Log::new();
    let main = getcurrent();
    let tracer = printing_tracer(&log);
    let g = Greenlet::builder().name("g").build({
        let (log, tracer, main) = (log.clone(), tracer.clone(), main.clone());
        move |_| {
            log.say(format!("previous: {:?}", settrace(Some(tracer))));
            main.switch(())
        }
    });
    g.switch(()).unwrap();
    log.say(format!(
        "main sees gettrace() is tracer: {}",
        gettrace() == Some(tracer)
    ));
    g.switch(()).unwrap();
    settrace(None);
    assert_eq!(
        log.lines(),
        [
            "previous: None",
            "TRACE switch g -> main | current: main",
            "main sees gettrace() is tracer: true",
            "TRACE switch main -> g | current: g",
            "TRACE switch g -> main | current: main",
        ]
    );
}

#[test]
fn r10_4_tracer_receives_one_event_with_origin_and_target() {
    let log = Log::new();
    let sink = log.clone();
    settrace(Some(Tracer::new(move |event: &Event| {
        let (origin, target) = match event {
            Event::Switch { origin, target } | Event::Throw { origin, target } => (origin, target),
            _ => unreachable!("no other events exist yet"),
        };
        assert_eq!(origin, event.origin());
        assert_eq!(target, event.target());
        sink.say(format!("{} {} -> {}", event.kind(), nm(origin), nm(target)));
        Ok(())
    })));
    let g = Greenlet::builder().name("g").build(|_| Ok(()));
    g.switch(()).unwrap();
    settrace(None);
    assert_eq!(log.lines(), ["switch main -> g", "switch g -> main"]);
}

#[test]
fn r10_5_tracer_success_leaves_the_value_alone() {
    settrace(Some(noop()));
    let g = Greenlet::new(|v| Ok(v.downcast::<i32>().unwrap() * 2));
    assert_eq!(g.switch(21).unwrap().downcast::<i32>().unwrap(), 42);
    settrace(None);
}
