//! Spec section 9 (threads): `docs/reference/python-greenlet-reference.md` §9.1-§9.3, with spec
//! R4's Rust rules for threads: per-thread main greenlets, `!Send` handles, and what happens to a
//! thread's greenlets when it exits (killed, destructors run: the runtime's documented choice, see
//! `kill_all` and the crate docs), plus `kill_all`, the explicit way to kill them.
//!
//! Not applicable (spec R4): every cross-thread runtime error of §9.2 and §9.3 (`Cannot switch
//! to a different thread`, `parent cannot be on a different thread`, `cannot switch to a
//! different thread (which happens to have exited)`, an exited thread's main greenlet reported
//! dead to another thread): a `Greenlet` is `!Send` and `!Sync`, so no other thread can hold
//! one and those calls do not compile. The `compile_fail` doctest on `Greenlet` shows the
//! refusal; `r9_2_handles_are_not_send` checks the auto traits here.

mod support;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread;

use greenlet::{
    getcurrent, kill_all, Error, Event, Greenlet, GreenletExit, KillFailure, Recorder, Tracer,
    Value,
};

type Shared = Arc<Mutex<Vec<String>>>;

fn shared() -> Shared {
    Arc::new(Mutex::new(Vec::new()))
}

fn push(log: &Shared, line: impl Into<String>) {
    log.lock().unwrap().push(line.into());
}

fn lines(log: &Shared) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// Pushes `finally: LABEL` when dropped: a destructor on a greenlet's stack.
struct Finally(Shared, String);

impl Drop for Finally {
    fn drop(&mut self) {
        push(&self.0, format!("finally: {}", self.1));
    }
}

/// The current greenlet's parent, bound before a switch (an inline `getcurrent()` temporary
/// would keep a handle to the suspended greenlet alive during the switch).
fn parent_of_current() -> Greenlet {
    getcurrent().parent().expect("not the main greenlet")
}

/// A greenlet that, once switched to, suspends in a switch to its parent with a destructor on
/// its stack, and logs the exit that kills it.
fn suspended(log: &Shared, label: &str) -> Greenlet {
    let (log, label) = (log.clone(), label.to_string());
    let g = Greenlet::new(move |_| -> Result<(), Error> {
        let _finally = Finally(log.clone(), label.clone());
        let parent = parent_of_current();
        match parent.switch(()) {
            Err(e) if e.is_exit() => {
                push(&log, format!("exit: {label}"));
                Err(e)
            }
            _ => Ok(()),
        }
    });
    g.switch(()).unwrap();
    g
}

/// g01_main_per_thread.py: each thread has its own main greenlet, created implicitly: a main
/// greenlet (no parent, `main` in its Debug), different from the other threads' ones.
#[test]
fn r9_1_each_thread_has_its_own_main_greenlet() {
    let here = getcurrent();
    assert!(here.is_main());
    let spawn = || {
        thread::spawn(|| {
            let m = getcurrent();
            let is_main =
                m.is_main() && m.parent().is_none() && format!("{m:?}").contains(" main>");
            let child = Greenlet::new(|_| Ok(getcurrent().parent().unwrap().is_main()));
            let child_parent_is_main = child.parent() == Some(m.clone());
            let child_sees_main = child.switch(()).unwrap().downcast::<bool>().unwrap();
            (
                m.id(),
                is_main,
                child_parent_is_main,
                child_sees_main,
                m == getcurrent(),
            )
        })
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!((a.1, a.2, a.3, a.4), (true, true, true, true));
    assert_eq!((b.1, b.2, b.3, b.4), (true, true, true, true));
    assert_ne!(a.0, here.id());
    assert_ne!(b.0, here.id());
    assert_ne!(a.0, b.0);
    assert!(here.is_current(), "this thread's main is unaffected");
}

/// A trait with a blanket impl for every type and a second one for `Send` types: naming
/// `<T as AmbiguousIfSend<_>>::CHECK` is ambiguous (does not compile) exactly when `T: Send`.
trait AmbiguousIfSend<Marker> {
    const CHECK: () = ();
}
impl<T: ?Sized> AmbiguousIfSend<()> for T {}
struct SendMarker;
impl<T: ?Sized + Send> AmbiguousIfSend<SendMarker> for T {}

/// The same for `Sync`.
trait AmbiguousIfSync<Marker> {
    const CHECK: () = ();
}
impl<T: ?Sized> AmbiguousIfSync<()> for T {}
struct SyncMarker;
impl<T: ?Sized + Sync> AmbiguousIfSync<SyncMarker> for T {}

macro_rules! assert_not_send_nor_sync {
    ($($t:ty),*) => {
        $(
            const _: () = <$t as AmbiguousIfSend<_>>::CHECK;
            const _: () = <$t as AmbiguousIfSync<_>>::CHECK;
        )*
    };
}

// A greenlet (and anything that can hold one) cannot reach another thread: §9.2's runtime
// errors are compile-time errors here.
assert_not_send_nor_sync!(Greenlet, Value, Tracer, Event, Recorder);

/// §9.2: switching to (or throwing into, or reparenting onto) another thread's greenlet cannot
/// be written. Checked at compile time above; errors, on the other hand, can cross threads.
#[test]
fn r9_2_handles_are_not_send() {
    fn send_and_sync<T: Send + Sync + 'static>() {}
    fn send<T: Send + 'static>() {}
    send_and_sync::<Error>();
    send_and_sync::<GreenletExit>();
    send::<KillFailure>();
    // An error produced by greenlets in one thread can be handed to another.
    let err = thread::spawn(|| {
        Greenlet::new(|_| -> Result<(), Error> { Err(Error::msg("from a thread")) })
            .switch(())
            .unwrap_err()
    })
    .join()
    .unwrap();
    assert_eq!(err.to_string(), "from a thread");
}

/// §9.3's situation, a thread that exits while it has suspended greenlets, in Rust: nothing
/// crashes, and the greenlets are killed (their destructors run) whether their handles died
/// with the thread's closure, were leaked, or are held by the greenlets themselves; unstarted
/// greenlets are not run; a chain of greenlets suspended inside each other is unwound.
#[test]
fn r9_3_thread_exit_kills_suspended_greenlets() {
    let log = shared();
    let t = thread::spawn({
        let log = log.clone();
        move || {
            let dropped = suspended(&log, "dropped with the closure");
            std::mem::forget(suspended(&log, "leaked"));
            // A greenlet holding a handle to itself.
            let main = getcurrent();
            let selfish = Greenlet::new({
                let log = log.clone();
                move |_| -> Result<(), Error> {
                    let _me = getcurrent();
                    let _finally = Finally(log.clone(), "self-referencing".into());
                    main.switch(())?;
                    Ok(())
                }
            });
            selfish.switch(()).unwrap();
            drop(selfish);
            // outer suspended inside inner's switch: outer -> inner -> main.
            let outer = Greenlet::new({
                let log = log.clone();
                move |_| -> Result<(), Error> {
                    let _finally = Finally(log.clone(), "outer".into());
                    let inner = Greenlet::new({
                        let log = log.clone();
                        move |_| -> Result<(), Error> {
                            let _finally = Finally(log.clone(), "inner".into());
                            let main = parent_of_current().parent().unwrap();
                            main.switch(())?;
                            Ok(())
                        }
                    });
                    inner.switch(())?;
                    Ok(())
                }
            });
            outer.switch(()).unwrap();
            std::mem::forget(outer);
            // Unstarted and leaked: never run.
            std::mem::forget(Greenlet::new({
                let log = log.clone();
                move |_| {
                    push(&log, "unstarted greenlet ran");
                    Ok(())
                }
            }));
            push(&log, "thread exits");
            drop(dropped);
        }
    });
    t.join().expect("the thread exits cleanly");
    let got = lines(&log);
    assert_eq!(
        got[..3],
        [
            "thread exits",
            "exit: dropped with the closure",
            "finally: dropped with the closure",
        ]
    );
    // The rest are killed by the thread's teardown, in an order the runtime does not promise.
    let mut rest = got[3..].to_vec();
    rest.sort();
    assert_eq!(
        rest,
        [
            "exit: leaked",
            "finally: inner",
            "finally: leaked",
            "finally: outer",
            "finally: self-referencing",
        ]
    );
}

/// A greenlet that refuses to die (catches every `GreenletExit` and suspends again) when its
/// thread exits: it is left suspended (leaked, as with a drop, §8.5), and the thread still
/// exits cleanly.
#[test]
fn r9_3_thread_exit_with_a_greenlet_that_refuses_to_die() {
    let log = shared();
    let t = thread::spawn({
        let log = log.clone();
        move || {
            greenlet::set_kill_hook(Some(Rc::new({
                let log = log.clone();
                move |_: &Greenlet, f: &KillFailure| push(&log, format!("hook: {f:?}"))
            })));
            let main = getcurrent();
            let stubborn = Greenlet::new({
                let log = log.clone();
                move |_| -> Result<(), Error> {
                    let _finally = Finally(log.clone(), "stubborn".into());
                    loop {
                        if let Err(e) = main.switch(()) {
                            push(&log, format!("ignoring {}", e.is_exit()));
                        }
                    }
                }
            });
            stubborn.switch(()).unwrap();
            std::mem::forget(stubborn);
            push(&log, "thread exits");
        }
    });
    t.join().expect("the thread exits cleanly");
    let got = lines(&log);
    assert_eq!(got[0], "thread exits");
    // The teardown throws one GreenletExit, the greenlet survives it, the hook hears of it,
    // and the greenlet is abandoned (never resumed: its destructor does not run).
    assert_eq!(got[1..], ["ignoring true", "hook: Survived"], "{got:?}");
}

thread_local! {
    /// Greenlet handles kept in a thread-local of the user's, destroyed at thread exit in an
    /// order relative to the runtime's own thread-locals that the user does not control.
    static KEPT: RefCell<Vec<Greenlet>> = const { RefCell::new(Vec::new()) };
}

/// Handles in a user thread-local that is destroyed *after* the runtime's teardown (it was
/// first used before the runtime's state, and thread-locals are destroyed in reverse order):
/// an ordinary suspended greenlet was already killed by the teardown (its destructor ran), and
/// dropping its handle afterwards does nothing more.
#[test]
fn r9_3_thread_local_handles_outliving_the_teardown() {
    if support::in_child_process("r9_3_thread_local_handles_outliving_the_teardown").is_some() {
        return;
    }
    let log = shared();
    thread::spawn({
        let log = log.clone();
        move || {
            KEPT.with(|_| {}); // registered before the runtime's state
            let main = getcurrent();
            let g = Greenlet::new({
                let log = log.clone();
                move |_| -> Result<(), Error> {
                    let _finally = Finally(log.clone(), "kept in a thread-local".into());
                    match main.switch(()) {
                        Err(Error::Exit(exit)) => {
                            // Which kill was it: the teardown's, or a drop of the last handle?
                            let by_drop = exit.message()
                                == Some(
                                    "Killing the greenlet because all references have vanished.",
                                );
                            push(&log, format!("exit, by a drop: {by_drop}"));
                            Err(exit.into())
                        }
                        _ => Ok(()),
                    }
                }
            });
            g.switch(()).unwrap();
            KEPT.with(|k| k.borrow_mut().push(g));
            push(&log, "thread exits");
        }
    })
    .join()
    .expect("the thread exits cleanly");
    assert_eq!(
        lines(&log),
        [
            "thread exits",
            "exit, by a drop: false",
            "finally: kept in a thread-local"
        ]
    );
}

/// A greenlet started while the teardown runs, after the suspended greenlets were killed (here
/// by the drop of the thread's tracer, which the teardown removes last): it is abandoned, not
/// left active, so that no greenlet of the thread is active once its state is freed. Its
/// handle, dropped later from a thread-local that outlives the teardown, sees it dead.
#[test]
fn r9_3_a_greenlet_started_during_the_teardown_is_abandoned() {
    if support::in_child_process("r9_3_a_greenlet_started_during_the_teardown_is_abandoned")
        .is_some()
    {
        return;
    }
    struct StartsOnDrop(Arc<Mutex<Vec<String>>>);
    impl Drop for StartsOnDrop {
        fn drop(&mut self) {
            let main = getcurrent();
            let log = self.0.clone();
            let late = Greenlet::new(move |_| -> Result<(), Error> {
                push(&log, "late greenlet runs");
                main.switch(())?;
                push(&log, "late greenlet resumed");
                Ok(())
            });
            late.switch(()).unwrap();
            push(
                &self.0,
                format!("started during the teardown, active: {}", late.is_active()),
            );
            KEPT.with(|k| k.borrow_mut().push(late));
        }
    }
    struct Report(Arc<Mutex<Vec<String>>>);
    impl Drop for Report {
        fn drop(&mut self) {
            let dead = KEPT.with(|k| k.borrow().iter().map(Greenlet::is_dead).collect::<Vec<_>>());
            push(&self.0, format!("after the teardown, dead: {dead:?}"));
        }
    }
    thread_local! {
        static REPORT: RefCell<Option<Report>> = const { RefCell::new(None) };
    }
    let log = shared();
    thread::spawn({
        let log = log.clone();
        move || {
            // Both registered before the runtime's state: destroyed after its teardown, the
            // report first (reverse order of registration).
            KEPT.with(|_| {});
            REPORT.with(|r| *r.borrow_mut() = Some(Report(log.clone())));
            let guard = StartsOnDrop(log.clone());
            greenlet::settrace(Some(greenlet::Tracer::new(move |_| {
                let _ = &guard;
            })));
            push(&log, "thread exits");
        }
    })
    .join()
    .expect("the thread exits cleanly");
    assert_eq!(
        lines(&log),
        [
            "thread exits",
            "late greenlet runs",
            "started during the teardown, active: true",
            "after the teardown, dead: [true]",
        ]
    );
}

/// The same with a greenlet that refuses to die: the teardown leaves it suspended, and its
/// handle is dropped later, when the runtime's state is gone. The thread must still exit
/// without crashing (spec R4: "A thread that exits with suspended greenlets must not crash").
#[test]
fn r9_3_thread_local_handle_to_a_survivor_outliving_the_teardown() {
    if support::in_child_process("r9_3_thread_local_handle_to_a_survivor_outliving_the_teardown")
        .is_some()
    {
        return;
    }
    let log = shared();
    thread::spawn({
        let log = log.clone();
        move || {
            KEPT.with(|_| {}); // registered before the runtime's state
            let main = getcurrent();
            let stubborn = Greenlet::new({
                let log = log.clone();
                move |_| -> Result<(), Error> {
                    loop {
                        if main.switch(()).is_err() {
                            push(&log, "ignoring");
                        }
                    }
                }
            });
            stubborn.switch(()).unwrap();
            KEPT.with(|k| k.borrow_mut().push(stubborn));
            push(&log, "thread exits");
        }
    })
    .join()
    .expect("the thread exits cleanly");
    let got = lines(&log);
    assert_eq!(got[0], "thread exits");
    assert!(got[1..].iter().all(|l| l == "ignoring"), "{got:?}");
}

/// `kill_all` (spec R4's explicit way to kill a thread's greenlets): every suspended greenlet
/// of the thread except the caller receives a `GreenletExit`, its destructors run; unstarted
/// and dead greenlets are left alone; it returns how many died.
#[test]
fn r9_3_kill_all_kills_every_suspended_greenlet() {
    let log = shared();
    let a = suspended(&log, "a");
    let b = suspended(&log, "b");
    let unstarted = Greenlet::new(|_| Ok("unstarted ran later"));
    let dead = Greenlet::new(|_| Ok(()));
    dead.switch(()).unwrap();
    push(&log, "kill_all");
    let recorder = Recorder::install();
    assert_eq!(kill_all(), 2);
    let events = recorder.lines();
    drop(recorder);
    assert!(a.is_dead() && b.is_dead());
    assert!(!unstarted.is_started() && dead.is_dead());
    let got = lines(&log);
    assert_eq!(got[0], "kill_all");
    let mut rest = got[1..].to_vec();
    rest.sort();
    assert_eq!(rest, ["exit: a", "exit: b", "finally: a", "finally: b"]);
    // Each kill is a throw into the victim and its exit going back to the caller.
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|l| l.starts_with("throw main -> "))
            .count(),
        2
    );
    assert_eq!(
        events
            .iter()
            .filter(|l| l.starts_with("switch ") && l.ends_with(" -> main"))
            .count(),
        2
    );
    // Nothing left to kill; the unstarted greenlet still runs normally.
    assert_eq!(kill_all(), 0);
    assert_eq!(
        unstarted.switch(()).unwrap().downcast::<&str>().unwrap(),
        "unstarted ran later"
    );

    // Called from inside a greenlet: the caller survives, the others (its suspended parent
    // included) are killed; the caller continues after the call.
    let log2 = shared();
    let p = Greenlet::new({
        let log2 = log2.clone();
        move |_| -> Result<(), Error> {
            let _finally = Finally(log2.clone(), "p".into());
            let caller = Greenlet::new({
                let log2 = log2.clone();
                move |_| {
                    let n = kill_all();
                    push(&log2, format!("caller continues after killing {n}"));
                    Ok(n)
                }
            });
            let main = parent_of_current();
            main.switch(())?; // suspended with `caller` unstarted
            let _ = caller;
            Ok(())
        }
    });
    p.switch(()).unwrap();
    let c = suspended(&log2, "c");
    let killer = Greenlet::new(|_| {
        let n = kill_all();
        Ok((n, getcurrent().is_active()))
    });
    let (n, alive) = killer
        .switch(())
        .unwrap()
        .downcast::<(usize, bool)>()
        .unwrap();
    assert_eq!((n, alive), (2, true));
    assert!(p.is_dead() && c.is_dead() && killer.is_dead());
    let mut got = lines(&log2);
    got.sort();
    assert_eq!(got, ["exit: c", "finally: c", "finally: p"]);
}

/// The kill hook is per thread, like the main greenlet (§1.3): one installed here is not told
/// about another thread's kill failures, and that thread reports with its own hook.
#[test]
fn r9_1_kill_hook_is_per_thread() {
    let here = Rc::new(RefCell::new(0_usize));
    greenlet::set_kill_hook(Some(Rc::new({
        let here = here.clone();
        move |_: &Greenlet, _: &KillFailure| *here.borrow_mut() += 1
    })));
    let log = shared();
    thread::spawn({
        let log = log.clone();
        move || {
            greenlet::set_kill_hook(Some(Rc::new({
                let log = log.clone();
                move |g: &Greenlet, f: &KillFailure| {
                    let what = match f {
                        KillFailure::Error(e) => e.to_string(),
                        other => format!("{other:?}"),
                    };
                    push(
                        &log,
                        format!("other thread's hook: {what} (main: {})", g.is_main()),
                    );
                }
            })));
            let quiet = Greenlet::new(|_| -> Result<(), Error> {
                let parent = parent_of_current();
                parent.switch(())?;
                Ok(())
            });
            quiet.switch(()).unwrap();
            let fails = Greenlet::new(|_| -> Result<(), Error> {
                let parent = parent_of_current();
                match parent.switch(()) {
                    Err(_) => Err(Error::msg("failed while killed")),
                    Ok(_) => Ok(()),
                }
            });
            fails.switch(()).unwrap();
            drop(quiet); // dies of the exit: nothing to report
            drop(fails);
        }
    })
    .join()
    .unwrap();
    assert_eq!(
        lines(&log),
        ["other thread's hook: failed while killed (main: false)"]
    );
    assert_eq!(*here.borrow(), 0);
    greenlet::set_kill_hook(None);
}

/// Greenlets kept in a thread-local that outlives the runtime's teardown, and switched to
/// from that thread-local's destructor: one unstarted, one built on a recycled `Inner` whose
/// spare coroutine fits (ready to run without a start), one dead. Their thread's greenlets were
/// torn down: each switch fails with `ThreadExited` (Python: "cannot switch to a different
/// thread (which happens to have exited)"), and the code goes on (it used to abort the
/// process: the greenlet started, then found no live ancestor to finish into).
#[test]
fn r9_3_greenlets_switched_to_after_the_teardown_refuse() {
    if support::in_child_process("r9_3_greenlets_switched_to_after_the_teardown_refuse").is_some() {
        return;
    }
    struct SwitchOnDrop(Shared, Vec<(&'static str, Greenlet)>);
    impl Drop for SwitchOnDrop {
        fn drop(&mut self) {
            for (what, g) in self.1.drain(..) {
                let got = g.switch(());
                let thrown = g.throw(Error::msg("late"));
                push(
                    &self.0,
                    format!(
                        "{what}: {}, {}, started: {}",
                        got.err().map_or("ran".into(), |e| e.to_string()),
                        thrown.err().map_or("ran".into(), |e| e.to_string()),
                        g.is_started()
                    ),
                );
            }
        }
    }
    thread_local! {
        static LATE: RefCell<Option<SwitchOnDrop>> = const { RefCell::new(None) };
    }
    let log = shared();
    thread::spawn({
        let log = log.clone();
        move || {
            LATE.with(|_| {}); // registered before the runtime's state: destroyed after it
            let unstarted = Greenlet::new(|_| Ok("ran"));
            // A lifetime, so that the next greenlet is built on its recycled `Inner`.
            let first = Greenlet::new(|_| Ok(()));
            first.switch(()).unwrap();
            drop(first);
            let ready = Greenlet::new(|_| Ok("ran"));
            let dead = Greenlet::new(|_| Ok(()));
            dead.switch(()).unwrap();
            let kept = vec![("unstarted", unstarted), ("ready", ready), ("dead", dead)];
            LATE.with(|l| *l.borrow_mut() = Some(SwitchOnDrop(log.clone(), kept)));
            push(&log, "thread exits");
        }
    })
    .join()
    .expect("the thread exits cleanly");
    let refused = "cannot switch to a greenlet of a thread that has exited";
    assert_eq!(
        lines(&log),
        [
            "thread exits".to_string(),
            format!("unstarted: {refused}, {refused}, started: false"),
            format!("ready: {refused}, {refused}, started: false"),
            format!("dead: {refused}, {refused}, started: true"),
        ]
    );
}
