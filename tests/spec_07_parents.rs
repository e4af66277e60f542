//! Spec section 7 (parents): `docs/reference/python-greenlet-reference.md` §7.1-§7.2, ported to the
//! Rust runtime.
//!
//! Not applicable (spec R1, R4):
//! - §7.1, a parent that is not a greenlet (`None`, `1`, `"42"`: `TypeError`): `set_parent`
//!   and `Builder::parent` take a `&Greenlet`, so it does not compile.
//! - §7.1, `del g.parent` (`AttributeError: can't delete attribute`): there is no way to remove
//!   a parent in the API.
//! - §7.1, "parent must not be garbage collected": a parent handle keeps the parent alive, and
//!   every chain ends at a main greenlet.
//! - §7.1, "parent cannot be on a different thread": handles are `!Send`, so a greenlet of
//!   another thread cannot be named (see spec_09_threads.rs).

mod support;

use greenlet::{getcurrent, Error, Greenlet, Value};
use support::Log;

fn show(out: &Log, r: Result<(), Error>) {
    match r {
        Ok(()) => out.say("ok"),
        Err(e) => out.say(format!("{e:?}: {e}")),
    }
}

/// e01_parent_errors.py: cycles are refused (`g` as its own parent, or a deeper cycle), a main
/// greenlet's parent cannot be set and is `None`. A refused change leaves the parent as it was.
#[test]
fn r7_1_parent_rules() {
    let out = Log::new();
    let main = getcurrent();
    let g1 = Greenlet::new(|_| Ok(()));
    let g2 = Greenlet::new(|_| Ok(()));
    let g3 = Greenlet::new(|_| Ok(()));
    show(&out, g1.set_parent(&g1));
    show(&out, g1.set_parent(&g2));
    show(&out, g2.set_parent(&g3));
    show(&out, g3.set_parent(&g1));
    show(&out, main.set_parent(&g1));
    out.say(format!("{:?}", main.parent()));
    assert_eq!(
        out.lines(),
        [
            "CyclicParent: cyclic parent chain",
            "ok",
            "ok",
            "CyclicParent: cyclic parent chain",
            "MainGreenletParent: cannot set the parent of a main greenlet",
            "None",
        ]
    );
    // The refused changes changed nothing.
    assert_eq!(g1.parent(), Some(g2.clone()));
    assert_eq!(g2.parent(), Some(g3.clone()));
    assert_eq!(g3.parent(), Some(main.clone()));
    assert!(main.parent().is_none());

    // Setting the parent it already has, or main, is fine; so is breaking the chain and
    // closing it the other way round.
    show(&out, g1.set_parent(&g2));
    show(&out, g1.set_parent(&main));
    show(&out, g3.set_parent(&g1));
    assert_eq!(out.lines()[6..], ["ok", "ok", "ok"]);

    // A cycle through a started greenlet, refused from inside it.
    let runner = Greenlet::new({
        let main = main.clone();
        move |_| {
            let me = getcurrent();
            let child = Greenlet::new(|_| Ok(())); // parent: me
            let refused = matches!(me.set_parent(&child), Err(Error::CyclicParent));
            let kept = me.parent() == Some(main);
            Ok(refused && kept)
        }
    });
    assert!(runner.switch(()).unwrap().downcast::<bool>().unwrap());
}

/// e02_reparent_changes_return_target.py: reparenting an unstarted or a suspended greenlet
/// changes where its result goes; an unstarted new parent is started with the result.
#[test]
fn r7_2_reparent_changes_return_target() {
    let out = Log::new();
    let parent_glet = Greenlet::new({
        let out = out.clone();
        move |child_result: Value| {
            out.say(format!(
                "In the parent, got {}",
                child_result.downcast::<&str>().unwrap()
            ));
            Ok("parent done")
        }
    });
    let child_glet = Greenlet::new(|_| Ok("child result"));
    child_glet.set_parent(&parent_glet).unwrap();
    out.say(child_glet.switch(()).unwrap().downcast::<&str>().unwrap());
    // Reparenting a suspended greenlet works too.
    let main = getcurrent();
    let w = Greenlet::new({
        let main = main.clone();
        move |_| {
            main.switch("suspended")?;
            Ok("worker result")
        }
    });
    out.say(w.switch(()).unwrap().downcast::<&str>().unwrap());
    w.set_parent(&Greenlet::new(|r: Value| {
        Ok(("new parent got", r.downcast::<&str>().unwrap()))
    }))
    .unwrap();
    let (a, b) = w.switch(()).unwrap().downcast::<(&str, &str)>().unwrap();
    out.say(format!("({a:?}, {b:?})"));
    assert_eq!(
        out.lines(),
        [
            "In the parent, got child result",
            "parent done",
            "suspended",
            "(\"new parent got\", \"worker result\")",
        ]
    );

    // An error follows the new parent too: here a suspended greenlet that catches it.
    let catcher = Greenlet::new({
        let main = main.clone();
        move |_| match main.switch("catcher waiting") {
            Err(e) => Ok(format!("catcher got error: {e}")),
            Ok(_) => Ok("catcher got a value".to_string()),
        }
    });
    catcher.switch(()).unwrap();
    let failing = Greenlet::new({
        let main = main.clone();
        move |_| -> Result<(), Error> {
            main.switch(())?;
            Err(Error::msg("late failure"))
        }
    });
    failing.switch(()).unwrap();
    failing.set_parent(&catcher).unwrap();
    assert_eq!(
        failing.switch(()).unwrap().downcast::<String>().unwrap(),
        "catcher got error: late failure"
    );

    // A running greenlet can reparent itself: its result goes to the new parent.
    let new_parent = Greenlet::new(|r: Value| Ok(r.downcast::<i32>().unwrap() + 1));
    let me_too = Greenlet::new({
        let new_parent = new_parent.clone();
        move |_| {
            getcurrent().set_parent(&new_parent)?;
            Ok(41)
        }
    });
    assert_eq!(me_too.switch(()).unwrap().downcast::<i32>().unwrap(), 42);
    assert!(me_too.is_dead() && new_parent.is_dead());
}
