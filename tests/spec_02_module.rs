//! Spec section 2 (module surface): `docs/reference/python-greenlet-reference.md` §2.1-§2.4, ported
//! to the Rust runtime. Each test ports the item's Python example
//! (`docs/reference/python-examples/aNN_*.py`) and asserts what its `.out` shows, adapted to Rust.
//!
//! Not applicable (spec R1):
//! - §2.1, last line: `greenlet.greenlet.getcurrent is greenlet.getcurrent` (module attributes
//!   copied onto the type). Rust has one path per function; there is nothing to alias.
//! - §2.2, the class hierarchy (`GreenletExit` derives from `BaseException`, `greenlet.error`
//!   from `Exception`). The Rust counterpart tested here: `GreenletExit` is a distinct kind of
//!   `Error`, apart from user errors and from the runtime's own misuse errors.
//! - §2.4, the writable `__dict__` and weak references: no per-instance attributes in Rust,
//!   and the handle offers no weak form. The copy refusal has a Rust counterpart: `Clone`
//!   gives another handle to the same greenlet, never a copy; `==` is identity.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use greenlet::{getcurrent, Error, Greenlet, GreenletExit};

/// The part of a greenlet's `Debug` after `<greenlet #ID`, as the Python example prints the
/// part of its repr after the address: ` pending>`, ` current active started main>`, ...
fn state_part(g: &Greenlet) -> String {
    let debug = format!("{g:?}");
    let prefix = format!("<greenlet #{}", g.id());
    debug
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{debug:?} does not start with {prefix:?}"))
        .to_string()
}

/// a01_getcurrent_main.py: the main greenlet is the same on every call, has no parent, is
/// active and not dead, and its repr ends with ` current active started main>`.
#[test]
fn r2_1_getcurrent_is_main() {
    let main = getcurrent();
    assert!(
        main == getcurrent(),
        "getcurrent() returns the same greenlet"
    );
    assert_eq!(main.id(), getcurrent().id());
    assert!(main.is_main());
    assert!(main.parent().is_none());
    assert!(main.is_active(), "bool(main) is True");
    assert!(!main.is_dead());
    assert!(main.is_started());
    assert!(main.is_current());
    assert!(format!("{main:?}").ends_with(" current active started main>"));
    assert_eq!(state_part(&main), " current active started main>");
}

/// a02_exceptions.py: `GreenletExit` is not an ordinary error. In Rust: `Error::Exit` is its
/// own variant, `is_exit` tells it apart from user errors and from the runtime's misuse errors
/// (the counterpart of `greenlet.error`), and it converts into `Error` with `?`/`into`.
#[test]
fn r2_2_greenlet_exit_is_distinct_from_errors() {
    let exit: Error = GreenletExit::new().into();
    assert!(exit.is_exit());
    assert!(matches!(exit, Error::Exit(ref e) if *e == GreenletExit::new()));

    let with_message: Error = GreenletExit::with_message("bye").into();
    assert!(with_message.is_exit());
    match &with_message {
        Error::Exit(e) => assert_eq!(e.message(), Some("bye")),
        other => panic!("expected Error::Exit, got {other:?}"),
    }

    let user = Error::msg("boom");
    assert!(!user.is_exit());
    assert!(matches!(user, Error::User(_)));
    assert_eq!(user.to_string(), "boom");

    // The runtime's own misuse errors are neither exits nor user errors.
    let g = Greenlet::new(|_| Ok(()));
    let cyclic = g.set_parent(&g).unwrap_err();
    assert!(!cyclic.is_exit());
    assert!(matches!(cyclic, Error::CyclicParent));
    let main_parent = getcurrent().set_parent(&g).unwrap_err();
    assert!(!main_parent.is_exit());
    assert!(matches!(main_parent, Error::MainGreenletParent));

    // GreenletExit is an std error of its own (so it can travel in a Value or a Box<dyn Error>).
    let boxed: Box<dyn std::error::Error> = Box::new(GreenletExit::new());
    assert!(boxed.downcast_ref::<GreenletExit>().is_some());
    assert_eq!(GreenletExit::new().to_string(), "GreenletExit");
    assert_eq!(
        GreenletExit::with_message("bye").to_string(),
        "GreenletExit: bye"
    );

    // And the two kinds behave differently when they escape `run` (§5.1, §5.2).
    let exits = Greenlet::new(|_| -> Result<(), Error> { Err(GreenletExit::new().into()) });
    let v = exits
        .switch(())
        .expect("an escaping GreenletExit is not an error");
    assert_eq!(v.downcast::<GreenletExit>().unwrap(), GreenletExit::new());
    let fails = Greenlet::new(|_| -> Result<(), Error> { Err(Error::msg("boom")) });
    let e = fails.switch(()).unwrap_err();
    assert!(!e.is_exit());
    assert_eq!(e.to_string(), "boom");
}

/// a08_repr.py: the Debug form shows the state words of Python's repr.
#[test]
fn r2_3_debug_shows_state_words() {
    let out = Rc::new(RefCell::new(Vec::<String>::new()));
    let main = getcurrent();
    let g = Greenlet::new({
        let out = out.clone();
        let main = main.clone();
        move |_| {
            out.borrow_mut().push(state_part(&getcurrent()));
            out.borrow_mut().push(state_part(&main));
            main.switch(())?;
            Ok(())
        }
    });
    out.borrow_mut().push(state_part(&g));
    g.switch(()).unwrap();
    out.borrow_mut().push(state_part(&g));
    g.switch(()).unwrap();
    out.borrow_mut().push(state_part(&g));
    out.borrow_mut().push(state_part(&main));
    assert_eq!(
        *out.borrow(),
        [
            " pending>",
            " current active started>",
            " suspended active started main>",
            " suspended active started>",
            " dead>",
            " current active started main>",
        ]
    );

    // A named greenlet shows its name between the id and the state words.
    let named = Greenlet::builder().name("worker-7").build(|_| Ok(()));
    assert_eq!(
        format!("{named:?}"),
        format!("<greenlet #{} \"worker-7\" pending>", named.id())
    );
    // Display: `<NAME>` for a named greenlet, the Debug form otherwise.
    assert_eq!(named.to_string(), "<worker-7>");
    assert_eq!(main.to_string(), format!("{main:?}"));
}

/// a09_dict_copy.py: greenlets cannot be copied. In Rust, `Clone` makes another handle to the
/// same greenlet: equal, same id, same state; a different greenlet is never equal.
#[test]
fn r2_4_clone_is_a_handle_and_eq_is_identity() {
    let main = getcurrent();
    let g = Greenlet::new({
        let main = main.clone();
        move |_| main.switch("suspended")
    });
    let h = g.clone();
    assert!(g == h);
    assert_eq!(g.id(), h.id());

    // The same closure body in another greenlet is another greenlet.
    let other = Greenlet::new({
        let main = main.clone();
        move |_| main.switch("suspended")
    });
    assert!(g != other);
    assert_ne!(g.id(), other.id());

    // A state change through one handle is seen through the other: it is the same greenlet.
    assert_eq!(
        h.switch(()).unwrap().downcast::<&str>().unwrap(),
        "suspended"
    );
    assert!(g.is_active() && !g.is_current());
    assert_eq!(format!("{g:?}"), format!("{h:?}"));

    // Hash agrees with ==. (Hash and Eq use only the greenlet's identity; clippy.toml tells
    // `mutable_key_type` so.)
    let set: HashSet<Greenlet> = [g.clone(), h.clone(), other.clone(), main.clone()]
        .into_iter()
        .collect();
    assert_eq!(set.len(), 3);
    assert!(set.contains(&h));

    // Dropping a clone does not kill it: another handle is left.
    drop(h);
    assert!(g.is_active());
    g.kill().unwrap();
    assert!(g.is_dead());
}
