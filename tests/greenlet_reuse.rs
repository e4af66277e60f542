//! Reuse of dead greenlets (issue 17, the lifetime row): a dead greenlet's `Inner`, and the
//! coroutine and stack it ran on, serve the next greenlet the thread builds. These tests check
//! that a reused greenlet is indistinguishable from a new one, and that the stacks kept for
//! reuse are bounded and given back (to the stack pool) when they are not reused: when too
//! many dead greenlets are held, when their handles go, and when their thread exits.
//!
//! The tests that read the stack allocator's counters run in a child process
//! ([`support::run_in_child`]), so that other tests cannot disturb the figures.

mod support;

use std::cell::RefCell;
use std::os::unix::process::ExitStatusExt;
use std::rc::Rc;

use greenlet::stack;
use greenlet::{getcurrent, Error, Greenlet, GreenletExit};

/// Records its name in `log` when dropped.
struct Guard(&'static str, Rc<RefCell<Vec<&'static str>>>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.1.borrow_mut().push(self.0);
    }
}

/// Every way a greenlet can end, each several times in a row, so that each greenlet after the
/// first runs on the `Inner` and the coroutine of one that ended the way before it.
#[test]
fn a_reused_greenlet_behaves_as_a_new_one_after_every_kind_of_death() {
    let main = getcurrent();
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut ids = Vec::new();
    for round in 0..3 {
        // Returned.
        let g = Greenlet::builder()
            .name(format!("ret-{round}"))
            .build(|v| Ok(v.downcast::<u32>().unwrap() + 1));
        ids.push(g.id());
        assert!(!g.is_started() && g.name() == Some(&*format!("ret-{round}")));
        assert_eq!(g.switch(41u32).unwrap().downcast::<u32>().unwrap(), 42);
        assert!(g.is_dead());
        drop(g);

        // Failed with an error.
        let g = Greenlet::new(|_| -> Result<(), Error> { Err(GreenletExit::new().into()) });
        ids.push(g.id());
        assert!(g.switch(()).is_ok(), "a GreenletExit comes back as a value");
        drop(g);

        // Panicked: the panic resumes in the parent.
        let g = Greenlet::new(|_| -> Result<(), Error> { panic!("on purpose {}", 7) });
        ids.push(g.id());
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.switch(())));
        assert!(caught.is_err());
        assert!(g.is_dead());
        drop(g);

        // Thrown into before it started: dies without running `run`.
        let ran = Rc::new(RefCell::new(false));
        let flag = ran.clone();
        let g = Greenlet::new(move |_| {
            *flag.borrow_mut() = true;
            Ok(())
        });
        ids.push(g.id());
        assert!(matches!(
            g.throw(Error::msg("early")),
            Err(e) if e.to_string() == "early"
        ));
        assert!(g.is_dead() && !*ran.borrow());
        drop(g);

        // Killed by dropping its last handle while suspended: its destructors run.
        let (m, l) = (main.clone(), log.clone());
        let g = Greenlet::new(move |_| -> Result<(), Error> {
            let _guard = Guard("killed", l);
            m.switch(())?;
            unreachable!("the kill arrives at the switch");
        });
        ids.push(g.id());
        g.switch(()).unwrap();
        assert!(g.is_active());
        drop(g);
        assert_eq!(log.borrow_mut().pop(), Some("killed"));

        // A parent held only by its dead child dies when the child is released.
        let (m, l) = (main.clone(), log.clone());
        let parent = Greenlet::new(move |_| -> Result<(), Error> {
            let _guard = Guard("parent", l);
            loop {
                m.switch(())?; // the kill arrives here
            }
        });
        parent.switch(()).unwrap();
        let child = Greenlet::builder().parent(&parent).build(|_| Ok(()));
        ids.push(child.id());
        child.switch(()).unwrap(); // dies, its result goes to `parent`, which comes back here
        drop(parent);
        assert!(
            log.borrow().is_empty(),
            "the dead child still holds its parent"
        );
        drop(child);
        assert_eq!(log.borrow_mut().pop(), Some("parent"));
    }
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids are never reused: {ids:?}");
}

#[inline(never)]
fn depth(n: u32) -> u32 {
    let frame = std::hint::black_box([n; 256]); // 1 KiB a level
    if n == 0 {
        0
    } else {
        1 + depth(n - 1) + frame[0] - n
    }
}

/// A greenlet built after smaller ones died gets the stack size it asked for, not the spare
/// stack of a dead one; and the other way round.
#[test]
fn a_reused_greenlet_gets_the_stack_size_it_asked_for() {
    for _ in 0..3 {
        for _ in 0..4 {
            let g = Greenlet::new(|_| Ok(depth(4)));
            assert_eq!(g.switch(()).unwrap().downcast::<u32>().unwrap(), 4);
        }
        // About 1 MiB of recursion: far more than the 64 KiB default.
        let deep = Greenlet::builder()
            .stack_size(4 << 20)
            .build(|_| Ok(depth(1000)));
        assert_eq!(deep.switch(()).unwrap().downcast::<u32>().unwrap(), 1000);
        drop(deep);
        let small = Greenlet::builder()
            .stack_size(16 << 10)
            .build(|_| Ok(depth(2)));
        assert_eq!(small.switch(()).unwrap().downcast::<u32>().unwrap(), 2);
    }
}

/// Starts `n` greenlets that switch back to this thread's main greenlet at once: `n` stacks
/// in use.
fn suspended(n: usize) -> Vec<Greenlet> {
    let main = getcurrent();
    (0..n)
        .map(|_| {
            let m = main.clone();
            let g = Greenlet::new(move |_| m.switch(()));
            g.switch(()).unwrap();
            g
        })
        .collect()
}

/// Dead greenlets keep their stacks for reuse only up to a bound, and dropping their handles
/// gives back all but those of the `Inner`s the thread keeps for reuse.
#[test]
fn dead_greenlets_keep_a_bounded_number_of_stacks() {
    let name = "dead_greenlets_keep_a_bounded_number_of_stacks";
    let Some(_) = support::in_child_process(name) else {
        const N: usize = 300;
        let gs = suspended(N);
        let in_use = stack::stats().thread_pooled;
        for g in &gs {
            g.switch(()).unwrap();
            assert!(g.is_dead());
        }
        let returned = stack::stats().thread_pooled - in_use;
        let kept = N - returned;
        assert!(
            kept <= 128,
            "{kept} of {N} dead greenlets whose handles are held kept their stacks"
        );
        drop(gs);
        let returned = stack::stats().thread_pooled - in_use;
        let kept = N - returned;
        assert!(
            kept <= 64,
            "{kept} stacks kept after every handle on {N} dead greenlets was dropped"
        );
        return;
    };
}

/// A thread's spare stacks go back to the allocator when it exits: threads that each run
/// greenlets one after another carve no new stacks after the first.
#[test]
fn spare_stacks_are_given_back_at_thread_exit() {
    let name = "spare_stacks_are_given_back_at_thread_exit";
    let Some(_) = support::in_child_process(name) else {
        let work = || {
            std::thread::spawn(|| {
                let gs = suspended(200);
                for g in &gs {
                    g.switch(()).unwrap();
                }
                drop(gs);
                // And some reused ones, left in the pool at exit.
                for _ in 0..10 {
                    Greenlet::new(|_| Ok(())).switch(()).unwrap();
                }
            })
            .join()
            .unwrap();
        };
        work();
        let carved = stack::stats().carved;
        for _ in 0..10 {
            work();
        }
        assert_eq!(
            stack::stats().carved,
            carved,
            "threads that exited left stacks behind"
        );
        return;
    };
}

/// The stack overflow report names the greenlet that overflowed, also on a stack that served
/// other greenlets before it.
#[test]
fn an_overflow_on_a_reused_stack_names_its_greenlet() {
    let name = "an_overflow_on_a_reused_stack_names_its_greenlet";
    let Some((status, _, stderr)) = support::run_in_child(name) else {
        for _ in 0..3 {
            let g = Greenlet::builder().name("earlier").build(|_| Ok(depth(2)));
            g.switch(()).unwrap();
        }
        let g = Greenlet::builder()
            .name("deep-diver")
            .build(|_| Ok(depth(u32::MAX)));
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
    assert!(
        line.contains("\"deep-diver\" (stack 65536 bytes; Builder::stack_size sets more)"),
        "{line}"
    );
}

/// A greenlet built on the `Inner` of one that has just returned is ready to start on its
/// spare coroutine: the first switch resumes that coroutine as it would a suspended greenlet.
/// Until then it is unstarted in every way; and every other way in (a child's result, a
/// throw, a switch from another greenlet, with a tracer) starts it as it starts a new one.
#[test]
fn a_greenlet_ready_on_a_spare_coroutine_is_unstarted_until_it_runs() {
    let fresh = || {
        // Dies and leaves its `Inner`, with its spare coroutine, to the next greenlet.
        Greenlet::new(|_| Ok(())).switch(()).unwrap();
    };

    // Unstarted: not active, not listed for `kill_all`, pending in its `Debug` form.
    fresh();
    let g = Greenlet::new(|v| Ok(v.downcast::<u32>().unwrap() * 2));
    assert!(!g.is_started() && !g.is_active() && !g.is_dead());
    assert!(format!("{g:?}").ends_with(" pending>"), "{g:?}");
    assert_eq!(greenlet::kill_all(), 0);
    assert!(!g.is_started());
    assert_eq!(g.switch(21u32).unwrap().downcast::<u32>().unwrap(), 42);
    assert!(g.is_dead());
    drop(g);

    // Started by a child's result: the parent's `run` receives it.
    fresh();
    let parent = Greenlet::new(|v| Ok(v.downcast::<&str>().unwrap().len()));
    let child = Greenlet::builder().parent(&parent).build(|_| Ok("four"));
    assert_eq!(child.switch(()).unwrap().downcast::<usize>().unwrap(), 4);
    assert!(parent.is_dead() && child.is_dead());
    drop((parent, child));

    // Thrown into: dies without running, the error goes to its parent.
    fresh();
    let g = Greenlet::new(|_| -> Result<(), Error> { unreachable!("never runs") });
    assert!(matches!(g.throw(Error::msg("early")), Err(e) if e.to_string() == "early"));
    assert!(g.is_dead());
    drop(g);

    // Switched into from another greenlet, with a tracer: one switch event, then it runs,
    // is active and listed while suspended, and killed by `kill_all`.
    fresh();
    let main = getcurrent();
    let m = main.clone();
    let ready = Greenlet::new(move |_| {
        m.switch("suspended")?;
        Ok(())
    });
    let r = ready.clone();
    let hop = Greenlet::new(move |_| r.switch(()));
    let events = Rc::new(RefCell::new(Vec::new()));
    let seen = events.clone();
    let (hop_id, ready_id) = (hop.id(), ready.id());
    greenlet::settrace(Some(greenlet::Tracer::new(move |event| {
        seen.borrow_mut()
            .push((event.origin().id(), event.target().id()));
        Ok(())
    })));
    assert_eq!(
        hop.switch(()).unwrap().downcast::<&str>().unwrap(),
        "suspended"
    );
    greenlet::settrace(None);
    assert!(events.borrow().contains(&(hop_id, ready_id)), "{events:?}");
    assert!(ready.is_active() && hop.is_active());
    assert_eq!(greenlet::kill_all(), 2);
    assert!(ready.is_dead() && hop.is_dead());

    // Dropped before it starts: its spare coroutine is told to quit, and the next greenlet
    // gets a stack all the same.
    fresh();
    drop(Greenlet::new(|_| -> Result<(), Error> {
        unreachable!("never runs")
    }));
    assert_eq!(
        Greenlet::new(|_| Ok(depth(10)))
            .switch(())
            .unwrap()
            .downcast::<u32>()
            .unwrap(),
        10
    );
}
