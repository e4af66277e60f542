//! Spec section 8 (greenlets killed when the last reference is dropped):
//! `docs/reference/python-greenlet-reference.md` §8.1-§8.9 and §1.8, ported to the Rust runtime. A
//! Python `del g` of the last reference is dropping the last `Greenlet` handle; `finally` blocks
//! are destructors (the `Guard` below); `sys.unraisablehook` is the kill hook (`set_kill_hook`).
//!
//! Not applicable (spec R1, R4):
//! - §8.7's mechanism (`gc.collect()` and `tp_is_gc`): Rust has no cycle collector. The
//!   counterpart is tested: a greenlet whose own stack holds a handle to it is never killed by
//!   drops (it leaks, as in Python) until `kill_all` kills it.
//! - §8.9, dropping the last reference in another thread (the kill deferred to the owning
//!   thread): handles are `!Send`, so it cannot happen. The second half of §8.9 (the owning
//!   thread has exited) has a Rust counterpart that differs from Python by design (documented
//!   in the crate docs and on `kill_all`): a thread that exits kills its suspended greenlets,
//!   so their destructors run. Tested here and in spec_09_threads.rs.
//! - §1.8 step 7 (interpreter shutdown): no interpreter.

mod support;

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use greenlet::{getcurrent, kill_all, panic_message, set_kill_hook, Error, Greenlet, KillFailure};
use support::Log;

/// Says its line when dropped: a `finally` block.
struct Guard(Log, &'static str);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.say(self.1);
    }
}

/// Installs a kill hook that logs every failure into `out` as
/// `unraisable: FAILURE object is greenlet #ID`; the previous hook comes back on drop.
struct HookGuard;

fn log_kill_failures(out: &Log) -> HookGuard {
    let out = out.clone();
    set_kill_hook(Some(Rc::new(move |g: &Greenlet, failure: &KillFailure| {
        let what = match failure {
            KillFailure::Error(e) => format!("error {e}"),
            KillFailure::Panic(p) => format!("panic {:?}", panic_message(p.as_ref())),
            KillFailure::Survived => format!("GreenletExit did not kill {g:?}"),
            _ => "an unknown failure".to_string(),
        };
        out.say(format!("unraisable: {what} object is greenlet #{}", g.id()));
    })));
    HookGuard
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        set_kill_hook(None);
    }
}

/// The current greenlet's parent. Tests bind it to a local before switching: written inline,
/// `getcurrent().parent().unwrap().switch(..)` keeps the temporary `getcurrent()` handle alive
/// during the switch (until the end of the statement, or of the whole `match`), so the
/// suspended greenlet holds a handle to itself and dropping the outside handles kills nothing.
fn parent_of_current() -> Greenlet {
    getcurrent().parent().expect("not the main greenlet")
}

/// f01_kill_on_last_ref.py: dropping the last handle to a suspended greenlet throws
/// `GreenletExit("Killing the greenlet because all references have vanished.")` into it,
/// synchronously, inside the drop; its destructors run; during the kill its parent is the
/// greenlet that dropped the handle.
#[test]
fn r8_1_drop_kills_suspended() {
    let out = Log::new();
    let _hook = log_kill_failures(&out);
    let main = getcurrent();
    let g = Greenlet::new({
        let out = out.clone();
        let main = main.clone();
        move |_| -> Result<(), Error> {
            let _finally = Guard(out.clone(), "finally runs");
            match main.switch("suspended") {
                Err(e) if e.is_exit() => {
                    out.say(format!("got {e}"));
                    let me = getcurrent();
                    out.say(format!(
                        "parent during kill is main? {}",
                        me.parent() == Some(main.clone())
                    ));
                    Err(e)
                }
                other => {
                    out.say(format!("unexpected {other:?}"));
                    Ok(())
                }
            }
        }
    });
    out.say(g.switch(()).unwrap().downcast::<&str>().unwrap());
    drop(g);
    out.say("after drop");
    assert_eq!(
        out.lines(),
        [
            "suspended",
            "got GreenletExit: Killing the greenlet because all references have vanished.",
            "parent during kill is main? true",
            "finally runs",
            "after drop",
        ]
    );
    assert!(main.is_current());
}

/// §8.1 when the drop happens while the dropper is unwinding from a panic: the kill still runs
/// inside the drop (the victim's destructors run), a panic of the victim during its kill is
/// caught and reported to the hook, and the dropper's own panic goes on unwinding with its own
/// payload.
#[test]
fn r8_1_drop_during_unwinding_kills() {
    let out = Log::new();
    let _hook = log_kill_failures(&out);
    let victim = |label: &'static str, panics: bool| {
        let out = out.clone();
        let g = Greenlet::new(move |_| -> Result<(), Error> {
            let _finally = Guard(out.clone(), label);
            let parent = parent_of_current();
            let r = parent.switch(());
            out.say(format!(
                "{label} killed: {}",
                r.as_ref().is_err_and(Error::is_exit)
            ));
            if panics {
                panic!("{label} panics while killed");
            }
            r.map(drop)
        });
        g.switch(()).unwrap();
        g
    };
    let quiet = victim("quiet", false);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _last_handle = quiet;
        panic!("the dropper panics");
    }));
    let payload = caught.expect_err("the dropper's panic goes on");
    assert_eq!(panic_message(payload.as_ref()), "the dropper panics");

    let loud = victim("loud", true);
    let id = loud.id();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _last_handle = loud;
        panic!("the dropper panics again");
    }));
    let payload = caught.expect_err("the dropper's panic goes on");
    assert_eq!(panic_message(payload.as_ref()), "the dropper panics again");
    assert_eq!(
        out.lines(),
        [
            "quiet killed: true".to_string(),
            "quiet".to_string(),
            "loud killed: true".to_string(),
            "loud".to_string(),
            format!("unraisable: panic \"loud panics while killed\" object is greenlet #{id}"),
        ]
    );
    assert!(getcurrent().is_main() && getcurrent().is_current());
}

/// f02_kill_not_for_unstarted_or_dead.py: nothing runs when an unstarted or a dead greenlet is
/// dropped. (An unstarted greenlet's closure is dropped unrun: its captures are released.)
#[test]
fn r8_2_drop_unstarted_or_dead_runs_nothing() {
    let out = Log::new();
    let _hook = log_kill_failures(&out);
    let g = Greenlet::new({
        let out = out.clone();
        let released = Guard(out.clone(), "unstarted closure released");
        move |_| {
            let _keep = &released;
            out.say("ran");
            Ok(())
        }
    });
    drop(g); // never started: run is not called
    let h = Greenlet::new({
        let out = out.clone();
        move |_| {
            out.say("h ran");
            Ok(())
        }
    });
    h.switch(()).unwrap();
    drop(h); // already dead: nothing runs
    assert_eq!(out.lines(), ["unstarted closure released", "h ran"]);
}

/// f03_kill_parent_is_current_then_restored.py: during the kill the parent is the dropper
/// (main); afterwards the original parent (`hub`) is back, which shows because the greenlet
/// survives (it stored a handle to itself) and is not dead.
#[test]
fn r8_3_kill_parent_is_dropper_then_restored() {
    let log = Log::new();
    let _hook = log_kill_failures(&log);
    let main = getcurrent();
    let hub = Greenlet::new(|_| Ok(()));
    let result: Rc<RefCell<Vec<Option<Greenlet>>>> = Rc::new(RefCell::new(Vec::new()));
    let ended = Log::new();
    let g = Greenlet::builder().parent(&hub).build({
        let main = main.clone();
        let hub = hub.clone();
        let result = result.clone();
        let ended = ended.clone();
        move |_| -> Result<(), Error> {
            let _finally = Guard(ended, "worker finally");
            match main.switch(()) {
                Err(e) if e.is_exit() => {
                    result.borrow_mut().push(getcurrent().parent());
                    result.borrow_mut().push(Some(getcurrent()));
                    hub.switch(())?;
                    Ok(())
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    g.switch(()).unwrap();
    drop(g);
    let (during_kill, survivor) = {
        let r = result.borrow();
        (r[0].clone(), r[1].clone().unwrap())
    };
    assert_eq!(
        format!(
            "{} {} {}",
            during_kill == Some(main.clone()),
            survivor.parent() == Some(hub.clone()),
            survivor.is_dead()
        ),
        "true true false"
    );
    assert!(log.lines().is_empty(), "no kill failure: {:?}", log.lines());
    // The survivor is an ordinary suspended greenlet again: dropping its last handle now (the
    // one `result` holds went first) kills it for good, with `hub` as its parent again.
    drop(std::mem::take(&mut *result.borrow_mut()));
    assert!(survivor.is_active());
    assert!(ended.lines().is_empty());
    drop(survivor);
    assert_eq!(ended.lines(), ["worker finally"]);
    assert!(log.lines().is_empty(), "no kill failure: {:?}", log.lines());
}

/// f04_kill_from_inside_child.py: a handle dropped inside a child greenlet: the kill switches
/// into the victim and back into that child; the victim's return value is discarded.
#[test]
fn r8_3_kill_from_inside_child() {
    let log = Log::new();
    let _hook = log_kill_failures(&log);
    let killer = Greenlet::new({
        let log = log.clone();
        move |_| {
            let v = Greenlet::new({
                let log = log.clone();
                move |_| {
                    let parent = getcurrent().parent().unwrap(); // the killer
                    match parent.switch(()) {
                        Err(e) if e.is_exit() => {
                            let during = getcurrent().parent().unwrap();
                            log.say("victim killed");
                            log.say(format!("victim parent is killer? {}", during == parent));
                            Ok("victim return value (discarded)")
                        }
                        _ => Ok("not killed"),
                    }
                }
            });
            v.switch(())?;
            log.say("killer drops handle");
            drop(v);
            log.say("killer continues");
            Ok("killer done")
        }
    });
    assert_eq!(
        killer.switch(()).unwrap().downcast::<&str>().unwrap(),
        "killer done"
    );
    assert_eq!(
        log.lines(),
        [
            "killer drops handle",
            "victim killed",
            "victim parent is killer? true",
            "killer continues",
        ]
    );
}

/// §8.3 nested: a greenlet killed by a drop holds the last handle to another suspended
/// greenlet; releasing it during its own kill kills that one from inside the first, which is
/// the second's temporary parent; both die, destructors in order, nothing reported.
#[test]
fn r8_3_nested_kills() {
    let log = Log::new();
    let _hook = log_kill_failures(&log);
    let victim = |label: &'static str, holds: Option<Greenlet>| {
        let log = log.clone();
        let g = Greenlet::new(move |_| -> Result<(), Error> {
            let holds = holds; // dropped last: after `_finally`
            let _finally = Guard(log.clone(), label);
            let parent = parent_of_current();
            let r = parent.switch(());
            let killer = getcurrent().parent().map_or(0, |p| p.id());
            log.say(format!("{label} killed by #{killer}"));
            if holds.is_some() {
                log.say(format!("{label} releases its inner greenlet"));
            }
            r.map(drop)
        });
        g.switch(()).unwrap();
        g
    };
    let b = victim("b", None);
    let a = victim("a", Some(b));
    let (main_id, a_id) = (getcurrent().id(), a.id());
    drop(a);
    assert_eq!(
        log.lines(),
        [
            format!("a killed by #{main_id}"),
            "a releases its inner greenlet".to_string(),
            "a".to_string(),
            format!("b killed by #{a_id}"),
            "b".to_string(),
        ]
    );
}

/// A user error type for §8.4.
#[derive(Debug)]
struct SomeError(&'static str);

impl std::fmt::Display for SomeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SomeError('{}')", self.0)
    }
}

impl std::error::Error for SomeError {}

/// f05_kill_raises_other.py: if the killed greenlet answers with another error, the error goes
/// to the kill hook with the greenlet, and the drop itself does not fail. A panic during the
/// kill is reported the same way.
#[test]
fn r8_4_kill_error_goes_to_hook() {
    let out = Log::new();
    let _hook = log_kill_failures(&out);
    let run = |_| -> Result<(), Error> {
        let parent = parent_of_current();
        match parent.switch(()) {
            Err(e) if e.is_exit() => Err(Error::user(SomeError("from kill"))),
            _ => Ok(()),
        }
    };
    let g = Greenlet::new(run);
    g.switch(()).unwrap();
    let id = g.id();
    drop(g);
    out.say("main continues");

    let p = Greenlet::new(|_| -> Result<(), Error> {
        let parent = parent_of_current();
        if let Err(e) = parent.switch(()) {
            panic!("panicking on {e}");
        }
        Ok(())
    });
    p.switch(()).unwrap();
    let pid = p.id();
    drop(p);
    out.say("main continues again");
    assert_eq!(
        out.lines(),
        [
            format!("unraisable: error SomeError('from kill') object is greenlet #{id}"),
            "main continues".to_string(),
            format!(
                "unraisable: panic \"panicking on GreenletExit: Killing the greenlet because \
                 all references have vanished.\" object is greenlet #{pid}"
            ),
            "main continues again".to_string(),
        ]
    );
    assert!(getcurrent().is_main() && getcurrent().is_current());
}

/// The hook also receives the error as a value it can inspect (downcast).
#[test]
fn r8_4_kill_hook_receives_the_error() {
    let seen: Rc<RefCell<Vec<(u64, bool, bool)>>> = Rc::new(RefCell::new(Vec::new()));
    set_kill_hook(Some(Rc::new({
        let seen = seen.clone();
        move |g: &Greenlet, failure: &KillFailure| {
            if let KillFailure::Error(e) = failure {
                seen.borrow_mut().push((
                    g.id(),
                    e.downcast_ref::<SomeError>().is_some(),
                    g.is_dead(),
                ));
            }
        }
    })));
    let g = Greenlet::new(|_| -> Result<(), Error> {
        parent_of_current().switch(())?;
        Ok(())
    });
    let h = Greenlet::new(|_| -> Result<(), Error> {
        let parent = parent_of_current();
        match parent.switch(()) {
            Err(_) => Err(Error::user(SomeError("x"))),
            Ok(_) => Ok(()),
        }
    });
    g.switch(()).unwrap();
    h.switch(()).unwrap();
    let hid = h.id();
    drop(g); // dies of the exit: nothing to report
    drop(h);
    set_kill_hook(None);
    assert_eq!(*seen.borrow(), [(hid, true, true)]);
}

/// f06_kill_ignored_resurrect.py: a greenlet that catches the `GreenletExit` and suspends again
/// is reported (`KillFailure::Survived`, which the default hook prints as Python does:
/// `GreenletExit did not kill <...>`) and leaked; the drop returns normally.
#[test]
fn r8_5_kill_survivor_is_reported_and_leaked() {
    let out = Log::new();
    let _hook = log_kill_failures(&out);
    let main = getcurrent();
    let stubborn = Greenlet::new({
        let out = out.clone();
        let main = main.clone();
        move |_| -> Result<(), Error> {
            loop {
                if let Err(e) = main.switch(()) {
                    if e.is_exit() {
                        out.say("ignoring GreenletExit");
                    }
                }
            }
        }
    });
    stubborn.switch(()).unwrap();
    let id = stubborn.id();
    drop(stubborn);
    out.say("main continues");
    assert_eq!(
        out.lines(),
        [
            "ignoring GreenletExit".to_string(),
            format!(
                "unraisable: GreenletExit did not kill <greenlet #{id} suspended active \
                 started> object is greenlet #{id}"
            ),
            "main continues".to_string(),
        ]
    );
}

/// f06 with the default kill hook: the survivor is reported on stderr with Python's message,
/// `GreenletExit did not kill <greenlet #ID suspended active started>`.
#[test]
fn r8_5_kill_survivor_default_report_on_stderr() {
    if let Some((stdout, stderr)) =
        support::in_child_process("r8_5_kill_survivor_default_report_on_stderr")
    {
        // The harness prints `test NAME ... ` before the test's own first line.
        let id: String = stdout
            .split("stubborn id ")
            .nth(1)
            .unwrap_or_else(|| panic!("no id line in the child's stdout:\n{stdout}"))
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let expected =
            format!("GreenletExit did not kill <greenlet #{id} suspended active started>");
        assert!(
            stderr.lines().any(|l| l == expected),
            "{expected:?} not in the child's stderr:\n{stderr}"
        );
        let ours: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("ignoring") || l.starts_with("main continues"))
            .collect();
        assert_eq!(ours[..2], ["ignoring GreenletExit", "main continues"]);
        return;
    }
    set_kill_hook(None);
    let main = getcurrent();
    let stubborn = Greenlet::new(move |_| -> Result<(), Error> {
        loop {
            if let Err(e) = main.switch(()) {
                if e.is_exit() {
                    println!("ignoring GreenletExit");
                }
            }
        }
    });
    stubborn.switch(()).unwrap();
    println!("stubborn id {}", stubborn.id());
    drop(stubborn);
    println!("main continues");
}

/// f07_kill_return_value_discarded.py: a value returned by `run` during the kill is discarded:
/// nothing reports it, and no later switch into the dropper delivers it.
#[test]
fn r8_6_kill_return_value_discarded() {
    let out = Log::new();
    let _hook = log_kill_failures(&out);
    let main = getcurrent();
    let g = Greenlet::new({
        let out = out.clone();
        let main = main.clone();
        move |_| match main.switch(()) {
            Err(e) if e.is_exit() => {
                out.say("returning from kill");
                Ok("returned from kill")
            }
            _ => Ok("not killed"),
        }
    });
    g.switch(()).unwrap();
    drop(g);
    out.say("main continues");
    assert!(
        main.switch(()).unwrap().is_unit(),
        "nothing pending for main"
    );
    // A child finishing later delivers its own result, not the discarded one.
    let later = Greenlet::new(|_| Ok("later"));
    assert_eq!(
        later.switch(()).unwrap().downcast::<&str>().unwrap(),
        "later"
    );
    assert_eq!(out.lines(), ["returning from kill", "main continues"]);
}

/// f08_gc_cycle.py: a suspended greenlet whose own stack holds a handle to it is not killed
/// when the outside handles go (it leaks, as in Python); `kill_all` kills it.
#[test]
fn r8_7_self_referencing_greenlet_is_not_killed_by_drop() {
    let seen = Log::new();
    let main = getcurrent();
    let g = Greenlet::new({
        let seen = seen.clone();
        let main = main.clone();
        move |_| -> Result<(), Error> {
            let _me = getcurrent(); // a handle to itself on its own stack: a cycle
            match main.switch(()) {
                Err(e) if e.is_exit() => {
                    seen.say("killed");
                    Err(e)
                }
                _ => Ok(()),
            }
        }
    });
    g.switch(()).unwrap();
    drop(g);
    assert!(seen.lines().is_empty());
    assert_eq!(kill_all(), 1);
    assert_eq!(seen.lines(), ["killed"]);
}

/// f09_dealloc_switch_args_not_lost.py: a greenlet whose last handle goes away during its own
/// switch out is killed (its destructors run), and the value of that switch still reaches the
/// target.
#[test]
fn r8_8_switch_value_not_lost_when_killed_mid_switch() {
    let seen = Log::new();
    let worker_ref: Rc<RefCell<Vec<Greenlet>>> = Rc::new(RefCell::new(Vec::new()));
    let initiator_cell: Rc<OnceCell<Greenlet>> = Rc::new(OnceCell::new());
    let worker = Greenlet::new({
        let seen = seen.clone();
        let worker_ref = worker_ref.clone();
        let initiator = initiator_cell.clone();
        move |_| -> Result<(), Error> {
            let parent = getcurrent().parent().unwrap();
            let value = parent.switch(())?; // wait for the value
            drop(worker_ref.borrow_mut().pop()); // drop the only outside handle
            initiator.get().unwrap().set_parent(&parent)?; // and the initiator's
            let _finally = Guard(seen.clone(), "worker finally ran");
            parent.switch(value)?; // the last handle vanishes during this switch
            Ok(())
        }
    });
    worker_ref.borrow_mut().push(worker.clone());
    drop(worker);
    worker_ref.borrow()[0].switch(()).unwrap();
    let initiator = Greenlet::builder()
        .parent(&worker_ref.borrow()[0])
        .build(|_| Ok(42));
    initiator_cell.set(initiator.clone()).unwrap();
    let value = initiator.switch(()).unwrap();
    assert_eq!(
        format!("{:?} {}", seen.lines(), value.downcast::<i32>().unwrap()),
        "[\"worker finally ran\"] 42"
    );
    assert!(worker_ref.borrow().is_empty());
}

/// g07_dealloc_after_thread_exit.py, the Rust way: Python abandons the suspended greenlets of
/// an exited thread (no `finally`); this runtime kills them as the thread exits, so their
/// destructors run (documented on `kill_all` and in the crate docs). Both the greenlets whose
/// handles die with the thread's closure and those whose handles were leaked are killed.
#[test]
fn r8_9_thread_exit_kills_suspended_greenlets() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    struct SharedGuard(Arc<Mutex<Vec<String>>>, String);
    impl Drop for SharedGuard {
        fn drop(&mut self) {
            self.0
                .lock()
                .unwrap()
                .push(format!("finally ran: {}", self.1));
        }
    }
    let spawn_suspended = |seen: &Arc<Mutex<Vec<String>>>, label: &str| {
        let seen = seen.clone();
        let label = label.to_string();
        let g = Greenlet::new(move |_| -> Result<(), Error> {
            let _finally = SharedGuard(seen.clone(), label.clone());
            let parent = parent_of_current();
            match parent.switch(()) {
                Err(e) if e.is_exit() => {
                    seen.lock()
                        .unwrap()
                        .push(format!("GreenletExit delivered: {label}"));
                    Err(e)
                }
                _ => Ok(()),
            }
        });
        g.switch(()).unwrap();
        g
    };
    let thread = std::thread::spawn({
        let seen = seen.clone();
        move || {
            let kept = spawn_suspended(&seen, "kept");
            let leaked = spawn_suspended(&seen, "leaked");
            std::mem::forget(leaked); // no handle will ever be dropped
            seen.lock().unwrap().push("thread exits".into());
            drop(kept);
        }
    });
    thread.join().expect("the thread exits cleanly");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "thread exits",
            "GreenletExit delivered: kept",
            "finally ran: kept",
            "GreenletExit delivered: leaked",
            "finally ran: leaked",
        ]
    );
}

/// A greenlet resumed by its child's result, whose only handle is that dead child's parent
/// link: cutting the link (reparenting the child) drops its last handle while it runs. It runs
/// on, and is killed once it switches away, as Python releases a greenlet's last reference
/// after it has switched out; the value of that switch still reaches its target.
#[test]
fn r8_8_last_handle_dropped_while_running_kills_after_the_switch_out() {
    let seen = Log::new();
    let main = getcurrent();
    let child_slot: Rc<RefCell<Option<Greenlet>>> = Rc::new(RefCell::new(None));
    let p = Greenlet::new({
        let seen = seen.clone();
        let main = main.clone();
        let child_slot = child_slot.clone();
        move |_| -> Result<(), Error> {
            *child_slot.borrow_mut() = Some(Greenlet::new(|_| Ok(()))); // its parent: p
            main.switch(())?; // main drops its handle on p, then starts the child
            let child = child_slot.borrow_mut().take().unwrap();
            child.set_parent(&main)?; // p's last handle goes here
            drop(child);
            seen.say("p runs without a handle");
            match main.switch("from p") {
                Err(e) if e.is_exit() => seen.say("p killed"),
                other => seen.say(format!("p resumed with {other:?}")),
            }
            Ok(())
        }
    });
    p.switch(()).unwrap();
    let child = child_slot.borrow().clone().unwrap();
    drop(p);
    // The child returns at once; its result resumes p, which switches back here.
    let got = child.switch(()).unwrap();
    assert_eq!(got.downcast::<&str>().unwrap(), "from p");
    assert_eq!(seen.lines(), ["p runs without a handle", "p killed"]);
    assert!(child.is_dead());
}
