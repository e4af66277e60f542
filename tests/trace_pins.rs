//! A tracer's event keeps its origin and target alive while the tracer runs, as if it held a
//! handle on each (Python's tracer receives them in a tuple): dropping the last handle on
//! either waits until the call has returned, also when the tracer switches meanwhile. (The
//! runtime pins them instead of counting handles: `thread::PinnedEvent`.)
//!
//! The origin's last handle can go during a traced arrival: a greenlet resumed by its child's
//! result, whose only handle is that child's parent link, cuts the link and switches away
//! (or returns): the arrival releases the handle the state kept on it, and the tracer's event
//! then holds the last one.

mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use greenlet::{getcurrent, settrace, Error, Event, Greenlet, Tracer};
use support::{named, nm, trace_line, Log};

/// What `p` does once it runs without a handle.
#[derive(Clone, Copy)]
enum Then {
    /// Switches to main, which kills it once the traced arrival is over.
    SwitchToMain,
    /// Returns: its result goes to main, and its last handle then frees it.
    Return,
}

/// Builds and starts `p`, which makes a child whose parent link is `p`'s only handle once
/// main has dropped its own; returns the child. Switching to the child then resumes `p` with
/// the child's result; `p` cuts the link (its last handle goes while it runs) and does `then`.
fn start_p(log: &Log, then: Then) -> (Greenlet, u64) {
    let main = getcurrent();
    let child_slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let p = named("p", {
        let log = log.clone();
        let child_slot = child_slot.clone();
        move |_| -> Result<&'static str, Error> {
            *child_slot.borrow_mut() = Some(named("child", |_| Ok(())));
            main.switch(())?;
            let child = child_slot.borrow_mut().take().unwrap();
            child.set_parent(&main)?; // p's last handle goes here
            drop(child);
            log.say("p runs without a handle");
            if let Then::Return = then {
                return Ok("p returns");
            }
            match main.switch("from p") {
                Err(e) if e.is_exit() => log.say("p killed"),
                other => log.say(format!("p resumed with {other:?}")),
            }
            Ok("p done")
        }
    });
    p.switch(()).unwrap();
    let child = child_slot.borrow().clone().unwrap();
    let id = p.id();
    drop(p);
    (child, id)
}

/// The trace line, and what the event says of its origin.
fn describe(event: &Event) -> String {
    format!(
        "{} | origin #{} dead: {}",
        trace_line(event),
        event.origin().id(),
        event.origin().is_dead()
    )
}

#[test]
fn the_origin_s_last_handle_goes_after_the_tracer_returns() {
    let log = Log::new();
    let (child, p_id) = start_p(&log, Then::SwitchToMain);
    let sink = log.clone();
    settrace(Some(Tracer::new(move |event: &Event| {
        sink.say(describe(event));
        if nm(event.origin()) == "p" && !event.origin().is_dead() {
            sink.say("tracer returns");
        }
    })));
    let got = child.switch(()).unwrap();
    settrace(None);
    assert_eq!(got.downcast::<&str>().unwrap(), "from p");
    let main_id = getcurrent().id();
    let child_id = child.id();
    assert_eq!(
        log.lines(),
        [
            format!("TRACE switch main -> child | current: child | origin #{main_id} dead: false"),
            format!("TRACE switch child -> p | current: p | origin #{child_id} dead: true"),
            "p runs without a handle".to_string(),
            // The event holds p: it is killed only once the tracer has returned.
            format!("TRACE switch p -> main | current: main | origin #{p_id} dead: false"),
            "tracer returns".to_string(),
            format!("TRACE throw main -> p | current: p | origin #{main_id} dead: false"),
            "p killed".to_string(),
            format!("TRACE switch p -> main | current: main | origin #{p_id} dead: true"),
        ]
    );
}

#[test]
fn the_origin_stays_alive_while_its_tracer_switches() {
    let log = Log::new();
    let (child, p_id) = start_p(&log, Then::SwitchToMain);
    let main = getcurrent();
    let h = named("h", {
        let log = log.clone();
        move |_| -> Result<(), Error> {
            log.say("h runs");
            main.switch(())?;
            Ok(())
        }
    });
    let h_id = h.id();
    let sink = log.clone();
    let once = Cell::new(true);
    settrace(Some(Tracer::new(
        move |event: &Event| -> Result<(), Error> {
            sink.say(describe(event));
            if nm(event.origin()) == "p" && event.target().is_main() && once.replace(false) {
                // Nested events, in h and back in main, while this call holds p.
                h.switch(())?;
                sink.say(format!(
                    "tracer returns, origin #{} dead: {}",
                    event.origin().id(),
                    event.origin().is_dead()
                ));
            }
            Ok(())
        },
    )));
    let got = child.switch(()).unwrap();
    settrace(None);
    assert_eq!(got.downcast::<&str>().unwrap(), "from p");
    let main_id = getcurrent().id();
    let child_id = child.id();
    assert_eq!(
        log.lines(),
        [
            format!("TRACE switch main -> child | current: child | origin #{main_id} dead: false"),
            format!("TRACE switch child -> p | current: p | origin #{child_id} dead: true"),
            "p runs without a handle".to_string(),
            format!("TRACE switch p -> main | current: main | origin #{p_id} dead: false"),
            format!("TRACE switch main -> h | current: h | origin #{main_id} dead: false"),
            "h runs".to_string(),
            format!("TRACE switch h -> main | current: main | origin #{h_id} dead: false"),
            format!("tracer returns, origin #{p_id} dead: false"),
            format!("TRACE throw main -> p | current: p | origin #{main_id} dead: false"),
            "p killed".to_string(),
            format!("TRACE switch p -> main | current: main | origin #{p_id} dead: true"),
        ]
    );
}

#[test]
fn a_dead_origin_is_not_reused_while_its_tracer_runs() {
    let log = Log::new();
    let (child, p_id) = start_p(&log, Then::Return);
    let sink = log.clone();
    settrace(Some(Tracer::new(move |event: &Event| {
        sink.say(describe(event));
        if nm(event.origin()) == "p" {
            // p's memory would be the first a new greenlet reuses, were it freed already.
            let fresh = Greenlet::new(|_| Ok(()));
            sink.say(format!(
                "fresh is the origin: {}, origin #{} dead: {}",
                fresh == *event.origin(),
                event.origin().id(),
                event.origin().is_dead()
            ));
        }
    })));
    let got = child.switch(()).unwrap();
    settrace(None);
    assert_eq!(got.downcast::<&str>().unwrap(), "p returns");
    let main_id = getcurrent().id();
    let child_id = child.id();
    assert_eq!(
        log.lines(),
        [
            format!("TRACE switch main -> child | current: child | origin #{main_id} dead: false"),
            format!("TRACE switch child -> p | current: p | origin #{child_id} dead: true"),
            "p runs without a handle".to_string(),
            format!("TRACE switch p -> main | current: main | origin #{p_id} dead: true"),
            format!("fresh is the origin: false, origin #{p_id} dead: true"),
        ]
    );
}
