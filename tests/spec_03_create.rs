//! Spec section 3 (creating greenlets; `run`; states):
//! `docs/reference/python-greenlet-reference.md` §3.1-§3.7, ported to the Rust runtime.
//!
//! Not applicable (spec R1):
//! - §3.1: `gr_frame` (no frame objects), `run=None` and a greenlet created without `run`
//!   (`AttributeError: run`): `Greenlet::new` and `Builder::build` take the closure, so a
//!   greenlet without one cannot be written. Tested instead: the builder's defaults.
//! - §3.3: the arity and keyword `TypeError`s of the constructor, and a non-callable `run`:
//!   both are compile-time errors in Rust (the builder's methods and `build`'s `FnOnce` bound).
//!   Tested instead: the builder's `parent` and `name`, and a `run` that fails at once.
//! - §3.4: the `run` attribute (reading or setting it, the main greenlet's lack of one): the
//!   closure is moved into the greenlet and is not an attribute. What remains observable is
//!   that it is called at most once (it is an `FnOnce`), which §4 and §6.4 cover.
//! - §3.5: subclasses defining `run` as a method: a closure serves (R1).
//! - §3.6: the `gr_frame` column of the state table (the other two columns are tested).
//! - §3.7: `gr_frame` and `gr_context` (contextvars).

use std::cell::RefCell;
use std::rc::Rc;

use greenlet::{getcurrent, Builder, Error, Greenlet};

/// a03_create_defaults.py: the parent defaults to the current greenlet; a new greenlet is
/// falsy (not active), not dead, not started, and its repr ends with ` pending>`.
#[test]
fn r3_1_builder_defaults() {
    let main = getcurrent();
    for g in [
        Greenlet::new(|_| Ok(())),
        Greenlet::builder().build(|_| Ok(())),
        Builder::new().build(|_| Ok(())),
        Builder::default().build(|_| Ok(())),
    ] {
        assert_eq!(g.parent(), Some(main.clone()), "parent defaults to current");
        assert!(!g.is_active(), "bool(g) is False");
        assert!(!g.is_dead());
        assert!(!g.is_started());
        assert!(!g.is_main());
        assert!(!g.is_current());
        assert_eq!(g.name(), None);
        assert_ne!(g.id(), 0);
        assert_ne!(g.id(), main.id());
        assert!(format!("{g:?}").ends_with(" pending>"), "{g:?}");
    }
}

/// a04_parent_is_creator.py: the default parent is the greenlet that creates the new one,
/// not the main greenlet.
#[test]
fn r3_2_default_parent_is_creator() {
    let outer = Greenlet::new(|_| {
        let inner = Greenlet::new(|_| Ok(()));
        let me = getcurrent();
        Ok((inner.parent() == Some(me.clone()), me.is_main()))
    });
    let (parent_is_creator, creator_is_main) = outer
        .switch(())
        .unwrap()
        .downcast::<(bool, bool)>()
        .unwrap();
    assert!(parent_is_creator);
    assert!(!creator_is_main);

    // The builder without `.parent` has the same default, inside a child too.
    let outer = Greenlet::new(|_| {
        let inner = Greenlet::builder().name("inner").build(|_| Ok(()));
        Ok(inner.parent() == Some(getcurrent()))
    });
    assert!(outer.switch(()).unwrap().downcast::<bool>().unwrap());
}

/// b12_constructor_args.py, the parts with a Rust counterpart: an explicit parent is kept;
/// and a `run` that fails on its first switch (Python: a non-callable `run`) sends its error
/// to the parent and leaves the greenlet dead.
#[test]
fn r3_3_builder_parent_and_failing_run() {
    let p = Greenlet::new(|_| Ok(()));
    let g = Greenlet::builder().parent(&p).build(|_| Ok(1));
    assert_eq!(g.parent(), Some(p.clone()));
    let g = Greenlet::builder()
        .name("worker-7")
        .parent(&p)
        .stack_size(64 << 10)
        .build(|_| Ok(1));
    assert_eq!(g.parent(), Some(p.clone()));
    assert_eq!(g.name(), Some("worker-7"));

    let out = Rc::new(RefCell::new(Vec::<String>::new()));
    let bad =
        Greenlet::new(|_| -> Result<(), Error> { Err(Error::msg("'int' object is not callable")) });
    match bad.switch(()) {
        Ok(v) => out.borrow_mut().push(format!("ok {v:?}")),
        Err(e) => out.borrow_mut().push(format!("Error: {e}")),
    }
    out.borrow_mut().push(format!("dead: {}", bad.is_dead()));
    assert_eq!(
        *out.borrow(),
        ["Error: 'int' object is not callable", "dead: true"]
    );
}

/// a07_states.py: `(bool(g), g.dead)` through a greenlet's life, as `(is_active, is_dead)`;
/// dying by error gives the same state as dying by return (and so does dying by panic).
#[test]
fn r3_6_state_table() {
    fn state(g: &Greenlet) -> (bool, bool) {
        (g.is_active(), g.is_dead())
    }
    let out = Rc::new(RefCell::new(Vec::<String>::new()));
    let main = getcurrent();
    let g = Greenlet::new({
        let out = out.clone();
        let main = main.clone();
        move |_| {
            out.borrow_mut()
                .push(format!("running:    {:?}", state(&getcurrent())));
            main.switch(())?;
            Ok(())
        }
    });
    out.borrow_mut()
        .push(format!("unstarted:  {:?}", state(&g)));
    g.switch(()).unwrap();
    out.borrow_mut()
        .push(format!("suspended:  {:?}", state(&g)));
    g.switch(()).unwrap();
    out.borrow_mut()
        .push(format!("finished:   {:?}", state(&g)));
    let h = Greenlet::new(|_| -> Result<(), Error> { Err(Error::msg("ValueError")) });
    assert!(h.switch(()).is_err());
    out.borrow_mut()
        .push(format!("raised:     {:?}", state(&h)));
    assert_eq!(
        *out.borrow(),
        [
            "unstarted:  (false, false)",
            "running:    (true, false)",
            "suspended:  (true, false)",
            "finished:   (false, true)",
            "raised:     (false, true)",
        ]
    );

    // is_started: false only before the first switch, true ever after.
    assert!(g.is_started() && h.is_started());
    assert!(!Greenlet::new(|_| Ok(())).is_started());

    // A panic escaping `run` also leaves the greenlet dead.
    let p = Greenlet::new(|_| -> Result<(), Error> { panic!("boom") });
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.switch(())));
    assert!(caught.is_err());
    assert_eq!(state(&p), (false, true));
}

/// Not in the spec: a dead greenlet's memory is reused by the next greenlet created on its
/// thread (`thread::recycle`). The reuse must be invisible: the new greenlet has its own id,
/// name, parent, idle mark and state, and dropping the dead one's last handle releases what it
/// held (its parent, here a greenlet whose last handle it was: killed then, as without reuse).
#[test]
fn r3_reused_greenlet_memory_starts_fresh() {
    let killed = Rc::new(RefCell::new(Vec::new()));
    let log = killed.clone();
    let main = getcurrent();
    // Passes every value it gets on to main, until a kill arrives (as an error).
    let parent = Greenlet::new(move |_| -> Result<(), Error> {
        let mut got = main.switch(());
        loop {
            match got {
                Ok(value) => got = main.switch(value),
                Err(error) => {
                    log.borrow_mut().push(error.to_string());
                    return Err(error);
                }
            }
        }
    });
    parent.switch(()).unwrap();
    let named = Greenlet::builder()
        .name("first")
        .parent(&parent)
        .idle(true)
        .stack_size(128 * 1024)
        .build(|_| Ok(1_u32));
    drop(parent); // `named` holds the last handle on it
                  // `named` returns to its parent, which passes the value on to main.
    let first_id = named.id();
    assert_eq!(named.switch(()).unwrap().downcast::<u32>().unwrap(), 1);
    assert!(named.is_dead());
    assert!(killed.borrow().is_empty());
    drop(named); // its memory goes to the pool; its parent's last handle goes: the kill
    assert_eq!(killed.borrow().len(), 1, "{:?}", killed.borrow());

    for round in 0..3_u32 {
        let g = Greenlet::new(move |v| Ok(v.downcast::<u32>()? + round));
        assert_ne!(g.id(), first_id);
        assert_eq!(g.name(), None);
        assert!(!g.is_idle());
        assert!(!g.is_started() && !g.is_dead());
        assert_eq!(g.parent(), Some(getcurrent()));
        assert_eq!(
            g.switch(10_u32).unwrap().downcast::<u32>().unwrap(),
            10 + round
        );
        assert!(g.is_dead());
    }
    // A dead greenlet with other handles is not reused while they live.
    let g = Greenlet::new(|_| Ok(()));
    g.switch(()).unwrap();
    let other = g.clone();
    drop(g);
    let fresh = Greenlet::builder().name("second").build(|_| Ok(()));
    assert_ne!(fresh, other);
    assert!(other.is_dead() && !fresh.is_started());
    assert_eq!(fresh.name(), Some("second"));
}
