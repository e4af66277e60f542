//! Spec section 6 (`throw()`): `docs/reference/python-greenlet-reference.md` §6.1-§6.7, ported to
//! the Rust runtime. Python exceptions are user errors of the [`Exc`] type below, whose `Display`
//! is Python's `repr` (`ValueError('v')`), so the collected lines read like the `.out` files.
//! `GreenletExit` displays as `GreenletExit` (or `GreenletExit: message`).
//!
//! Not applicable (spec R1):
//! - §6.3, the argument forms `throw(type)`, `throw(type, value)`, `throw(type, tb)` and their
//!   `TypeError`s in the caller: `throw` takes one `impl Into<Error>`, so a wrong form does not
//!   compile. Tested instead: each kind of value that converts into an error arrives intact.
//! - §6.4, a greenlet without `run` (`AttributeError: run`): impossible by construction. Its
//!   counterpart, a greenlet that cannot be started because its stack cannot be allocated, is
//!   tested: the caller gets the error and the greenlet stays unstarted.

mod support;

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use greenlet::{getcurrent, Error, Greenlet, GreenletExit, Value};
use support::Log;

/// A Python exception: its class name and its argument; `Display` is Python's `repr`.
#[derive(Debug, Clone, PartialEq)]
struct Exc(&'static str, Option<&'static str>);

impl fmt::Display for Exc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(arg) => write!(f, "{}('{}')", self.0, arg),
            None => write!(f, "{}()", self.0),
        }
    }
}

impl std::error::Error for Exc {}

fn exc(kind: &'static str, arg: &'static str) -> Error {
    Error::user(Exc(kind, Some(arg)))
}

fn exc0(kind: &'static str) -> Error {
    Error::user(Exc(kind, None))
}

/// Says its line when dropped: a `finally` block.
struct Finally(Log, &'static str);

impl Drop for Finally {
    fn drop(&mut self) {
        self.0.say(self.1);
    }
}

/// The `GreenletExit` a value holds, shown.
fn exit_of(v: Value) -> String {
    match v.downcast::<GreenletExit>() {
        Ok(exit) => exit.to_string(),
        Err(e) => format!("not a GreenletExit: {:?}", e.into_value()),
    }
}

/// d01_throw_suspended.py: `throw` into a suspended greenlet comes out of its pending
/// `switch`; what it does next decides what `throw` returns.
#[test]
fn r6_1_throw_into_suspended() {
    let out = Log::new();
    let main = getcurrent();
    let g = Greenlet::new({
        let out = out.clone();
        let main = main.clone();
        move |_| match main.switch("ready") {
            Err(e) => {
                out.say(format!("caught in greenlet: {e}"));
                Ok("handled")
            }
            Ok(_) => Ok("not thrown"),
        }
    });
    out.say(g.switch(()).unwrap().downcast::<&str>().unwrap());
    out.say(
        g.throw(exc("RuntimeError", "ciao"))
            .unwrap()
            .downcast::<&str>()
            .unwrap(),
    );
    assert_eq!(
        out.lines(),
        [
            "ready",
            "caught in greenlet: RuntimeError('ciao')",
            "handled"
        ]
    );
    assert!(g.is_dead());
}

/// d02_throw_default_greenletexit.py and d08_throw_kill_test.py: `kill()` (Python's `throw()`
/// with no arguments) throws a `GreenletExit`; if the greenlet lets it escape, it dies and the
/// exit is the value `kill()` returns. A second `kill()` on the dead greenlet returns a
/// `GreenletExit` too.
#[test]
fn r6_2_kill_throws_greenlet_exit() {
    let out = Log::new();
    let main = getcurrent();
    let g = Greenlet::new({
        let out = out.clone();
        let main = main.clone();
        move |_| -> Result<(), Error> {
            match main.switch("ready") {
                Err(e) => {
                    out.say(format!("greenlet sees {e} (exit: {})", e.is_exit()));
                    Err(e) // re-raise
                }
                Ok(_) => Ok(()),
            }
        }
    });
    g.switch(()).unwrap();
    let v = g.kill().unwrap();
    out.say(format!("kill() returned {} {}", exit_of(v), g.is_dead()));
    assert_eq!(
        out.lines(),
        [
            "greenlet sees GreenletExit (exit: true)",
            "kill() returned GreenletExit true"
        ]
    );

    // d08: the greenlet does not look at the exit, `?` passes it on.
    let out2 = Log::new();
    let f = |_| -> Result<(), Error> {
        let parent = getcurrent().parent().unwrap();
        parent.switch("ok")?;
        parent.switch("fail")?;
        Ok(())
    };
    let g = Greenlet::new(f);
    out2.say(g.switch(()).unwrap().downcast::<&str>().unwrap());
    let res = g.kill().unwrap();
    out2.say(format!("{} {}", exit_of(res), g.is_dead()));
    let res = g.kill().unwrap();
    out2.say(exit_of(res));
    // throw(GreenletExit) is the same as kill().
    let res = g.throw(GreenletExit::new()).unwrap();
    out2.say(exit_of(res));
    assert_eq!(
        out2.lines(),
        ["ok", "GreenletExit true", "GreenletExit", "GreenletExit"]
    );
}

/// d03_throw_forms.py, the Rust forms: anything that converts into `Error` can be thrown, and
/// arrives in the greenlet as that error.
#[test]
fn r6_3_throw_accepts_anything_into_error() {
    let main = getcurrent();
    let catcher = Greenlet::new({
        let main = main.clone();
        move |_| -> Result<(), Error> {
            let mut msg: Option<String> = None;
            loop {
                match main.switch(msg.take()) {
                    Err(Error::Exit(exit)) => msg = Some(format!("Exit: {exit}")),
                    Err(Error::User(e)) => {
                        let kind = if e.is::<Exc>() {
                            "Exc"
                        } else if e.is::<std::io::Error>() {
                            "io"
                        } else {
                            "other"
                        };
                        msg = Some(format!("User({kind}): {e}"));
                    }
                    Err(e) => msg = Some(format!("runtime: {e}")),
                    Ok(_) => return Ok(()), // a plain switch ends it
                }
            }
        }
    });
    catcher.switch(()).unwrap();
    let thrown = |r: Result<Value, Error>| -> String {
        r.unwrap().downcast::<Option<String>>().unwrap().unwrap()
    };
    let got = [
        thrown(catcher.throw(exc0("ValueError"))),
        thrown(catcher.throw(exc("ValueError", "v"))),
        thrown(catcher.throw("a message")),
        thrown(catcher.throw(String::from("an owned message"))),
        thrown(catcher.throw(Error::msg("Error::msg"))),
        thrown(catcher.throw(std::io::Error::other("io failure"))),
        thrown(catcher.throw(GreenletExit::new())),
        thrown(catcher.throw(GreenletExit::with_message("x"))),
        thrown(catcher.throw(Error::CyclicParent)),
    ];
    assert_eq!(
        got,
        [
            "User(Exc): ValueError()",
            "User(Exc): ValueError('v')",
            "User(other): a message",
            "User(other): an owned message",
            "User(other): Error::msg",
            "User(io): io failure",
            "Exit: GreenletExit",
            "Exit: GreenletExit: x",
            "runtime: cyclic parent chain",
        ]
    );
    assert!(catcher.is_active());
    catcher.switch(()).unwrap();
    assert!(catcher.is_dead());
}

/// d04_throw_unstarted.py: a throw into an unstarted greenlet starts it without calling `run`;
/// it dies at once with the error, which follows the exit rules: an error goes to the parent,
/// a `GreenletExit` reaches it as a value.
#[test]
fn r6_4_throw_into_unstarted() {
    let out = Log::new();
    let ran = Rc::new(RefCell::new(Vec::<i32>::new()));
    let g = Greenlet::new({
        let ran = ran.clone();
        move |_| {
            ran.borrow_mut().push(1);
            Ok(())
        }
    });
    match g.throw(exc("ValueError", "early")) {
        Err(e) => out.say(format!("raised in main: {e}")),
        Ok(v) => out.say(format!("returned {v:?}")),
    }
    out.say(format!(
        "run called? {:?} dead? {}",
        ran.borrow(),
        g.is_dead()
    ));
    let g2 = Greenlet::new({
        let ran = ran.clone();
        move |_| {
            ran.borrow_mut().push(2);
            Ok(())
        }
    });
    let v = g2.kill().unwrap();
    out.say(format!(
        "kill() -> {} {:?} {}",
        exit_of(v),
        ran.borrow(),
        g2.is_dead()
    ));
    assert_eq!(
        out.lines(),
        [
            "raised in main: ValueError('early')",
            "run called? [] dead? true",
            "kill() -> GreenletExit [] true",
        ]
    );

    // `run` is never called, but the closure is released: here it held the last handle to a
    // suspended greenlet, which is killed then (its destructor runs), and nothing is lost.
    let main = getcurrent();
    let held = Greenlet::new({
        let out = out.clone();
        let main = main.clone();
        move |_| -> Result<(), Error> {
            let _finally = Finally(out.clone(), "held greenlet finally");
            main.switch(())?;
            Ok(())
        }
    });
    held.switch(()).unwrap();
    let g4 = Greenlet::new(move |_| {
        let _held = held;
        Ok(())
    });
    out.say(format!("kill() -> {}", exit_of(g4.kill().unwrap())));
    assert_eq!(
        out.lines()[3..],
        ["held greenlet finally", "kill() -> GreenletExit"]
    );

    // The counterpart of the greenlet without `run`: one whose stack cannot be allocated.
    // The caller gets the error before any transfer; the greenlet is not started, not dead.
    let g3 = Greenlet::builder()
        .stack_size(usize::MAX / 2)
        .build(|_| Ok(()));
    let err = g3.throw(exc0("ValueError")).unwrap_err();
    assert!(matches!(err, Error::StackAllocation { .. }), "{err:?}");
    assert!(!g3.is_started() && !g3.is_dead());
}

/// d05_throw_dead.py: into a dead greenlet, a `GreenletExit` becomes a value for its nearest
/// live ancestor (here the caller: `throw` returns it); any other error is raised there.
#[test]
fn r6_5_throw_into_dead() {
    let out = Log::new();
    let g = Greenlet::new(|_| Ok(()));
    g.switch(()).unwrap();
    out.say(exit_of(g.kill().unwrap()));
    out.say(exit_of(g.throw(GreenletExit::with_message("x")).unwrap()));
    match g.throw(exc("ValueError", "into dead")) {
        Err(e) => out.say(format!("raised in main: {e}")),
        Ok(v) => out.say(format!("returned {v:?}")),
    }
    assert_eq!(
        out.lines(),
        [
            "GreenletExit",
            "GreenletExit: x",
            "raised in main: ValueError('into dead')",
        ]
    );
}

/// d09_throw_dead_with_live_parent.py: the nearest live ancestor of a dead greenlet receives
/// what is thrown into it: a `GreenletExit` as a value, another error as an error.
#[test]
fn r6_5_throw_into_dead_with_live_parent() {
    let out = Log::new();
    let main = getcurrent();
    let p = Greenlet::new({
        let out = out.clone();
        let main = main.clone();
        move |_| -> Result<(), Error> {
            loop {
                match main.switch("p waiting") {
                    Ok(r) => {
                        let shown = match r.downcast::<GreenletExit>() {
                            Ok(exit) => exit.to_string(),
                            Err(r) => format!("{:?}", r.into_value().downcast::<&str>().unwrap()),
                        };
                        out.say(format!("p resumed with value {shown}"));
                    }
                    Err(e) if e.is_exit() => return Err(e), // like Python's `except Exception`
                    Err(e) => out.say(format!("p caught {e}")),
                }
            }
        }
    });
    p.switch(()).unwrap();
    let c = Greenlet::builder().parent(&p).build(|_| Ok("c result"));
    out.say(c.switch(()).unwrap().downcast::<&str>().unwrap()); // c returns -> p -> main
    out.say(c.kill().unwrap().downcast::<&str>().unwrap()); // exit: a value for p
    out.say(
        c.throw(exc("KeyError", "k"))
            .unwrap()
            .downcast::<&str>()
            .unwrap(),
    ); // KeyError raised in p
    assert_eq!(
        out.lines(),
        [
            "p resumed with value \"c result\"",
            "p waiting",
            "p resumed with value GreenletExit",
            "p waiting",
            "p caught KeyError('k')",
            "p waiting",
        ]
    );
}

/// d06_throw_current.py: a throw into the current greenlet returns the error at once, in the
/// caller; a `GreenletExit` too (the greenlet is not dead, so it is not turned into a value).
#[test]
fn r6_6_throw_into_current() {
    let out = Log::new();
    match getcurrent().throw(exc("ValueError", "self")) {
        Err(e) => out.say(format!("raised immediately: {e}")),
        Ok(v) => out.say(format!("returned {v:?}")),
    }
    match getcurrent().kill() {
        Err(e) if e.is_exit() => out.say(format!("main.kill() raised {e}")),
        other => out.say(format!("unexpected {other:?}")),
    }
    let body = {
        let out = out.clone();
        move |_| {
            let me = getcurrent();
            match me.throw(exc("KeyError", "k")) {
                Err(e) => out.say(format!("child caught {e}")),
                Ok(v) => out.say(format!("returned {v:?}")),
            }
            Ok("ok")
        }
    };
    out.say(
        Greenlet::new(body)
            .switch(())
            .unwrap()
            .downcast::<&str>()
            .unwrap(),
    );
    assert_eq!(
        out.lines(),
        [
            "raised immediately: ValueError('self')",
            "main.kill() raised GreenletExit",
            "child caught KeyError('k')",
            "ok",
        ]
    );
    assert!(getcurrent().is_active() && !getcurrent().is_dead());
}

/// d07_throw_goes_to_parent.py: an error thrown into `g` that `g` does not catch goes to
/// `g`'s parent, not to the thrower; an unstarted parent dies of it too.
#[test]
fn r6_7_throw_goes_to_parent() {
    let out = Log::new();
    let main = getcurrent();
    let f1 = {
        let main = main.clone();
        move || {
            let main = main.clone();
            move |_: Value| match main.switch("f1 ready to catch") {
                Err(e) if e.downcast_ref::<Exc>().is_some_and(|x| x.0 == "IndexError") => {
                    Ok("caught")
                }
                Err(e) => Err(e),
                Ok(_) => Ok("normal exit"),
            }
        }
    };
    let f2 = {
        let main = main.clone();
        move || {
            let main = main.clone();
            move |_: Value| -> Result<(), Error> {
                main.switch("from f2")?;
                Ok(())
            }
        }
    };
    let str_of = |r: Result<Value, Error>| r.unwrap().downcast::<&str>().unwrap();

    // g2 unstarted, g1 unstarted: both die of the error, which reaches main.
    let g1 = Greenlet::new(f1());
    let g2 = Greenlet::builder().parent(&g1).build(f2());
    match g2.throw(exc0("IndexError")) {
        Err(e) => out.say(format!("{e} in main; {} {}", g2.is_dead(), g1.is_dead())),
        Ok(v) => out.say(format!("returned {v:?}")),
    }
    // g1 suspended, g2 unstarted.
    let g1 = Greenlet::new(f1());
    let g2 = Greenlet::builder().parent(&g1).build(f2());
    out.say(str_of(g1.switch(())));
    let r = str_of(g2.throw(exc0("IndexError")));
    out.say(format!("{r} {} {}", g2.is_dead(), g1.is_dead()));
    // g1 suspended, g2 suspended (in a switch to main).
    let g1 = Greenlet::new(f1());
    let g2 = Greenlet::builder().parent(&g1).build(f2());
    out.say(str_of(g1.switch(())));
    out.say(str_of(g2.switch(())));
    let r = str_of(g2.throw(exc0("IndexError")));
    out.say(format!("{r} {} {}", g2.is_dead(), g1.is_dead()));
    assert_eq!(
        out.lines(),
        [
            "IndexError() in main; true true",
            "f1 ready to catch",
            "caught true true",
            "f1 ready to catch",
            "from f2",
            "caught true true",
        ]
    );
}
