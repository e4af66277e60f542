//! Spec section 4 (switching and value passing): `docs/reference/python-greenlet-reference.md`
//! §4.1-§4.9, ported to the Rust runtime. Python's `print`s are collected in a [`Log`] and
//! compared with the example's `.out`, adapted to Rust values.
//!
//! Not applicable (spec R1): Python's argument packing (§1.4 step 4): positional arguments
//! becoming a tuple, `switch()` delivering `()`, keyword arguments becoming a dict (§4.2's
//! table, §4.3), and `run`'s signature not fitting the value (§4.9's `TypeError`). In Rust the
//! value passed is the value received: §4.1-§4.3 test that instead (unit included), and §4.9
//! tests the counterpart of the `TypeError`: a parent whose `run` rejects the value it is
//! started with.

mod support;

use std::cell::{OnceCell, RefCell};
use std::fmt::Debug;
use std::rc::Rc;

use greenlet::{getcurrent, Error, Greenlet, Value};
use support::Log;

/// A value's contents in Rust syntax, for the few types these tests send.
fn show(v: &Value) -> String {
    macro_rules! try_types {
        ($($t:ty),*) => {
            $(if let Some(x) = v.downcast_ref::<$t>() { return format!("{x:?}"); })*
        };
    }
    try_types!(
        (),
        i32,
        &'static str,
        String,
        (i32,),
        (i32, i32),
        Option<i32>,
        (&'static str, i32),
        (i32, (&'static str, i32)),
        (&'static str, &'static str)
    );
    format!("{v:?}")
}

/// b01_first_switch_args.py: the first switch into an unstarted greenlet calls `run` with the
/// value of that switch; `run`'s result is what the switch returns.
#[test]
fn r4_1_first_switch_calls_run_with_value() {
    let out = Log::new();
    let run = |out: Log| {
        move |v: Value| {
            out.say(format!("run got {}", show(&v)));
            Ok("done")
        }
    };
    let r = Greenlet::new(run(out.clone())).switch(()).unwrap();
    out.say(show(&r));
    let r = Greenlet::new(run(out.clone())).switch((1, 2)).unwrap();
    out.say(show(&r));
    assert_eq!(
        out.lines(),
        ["run got ()", "\"done\"", "run got (1, 2)", "\"done\""]
    );

    // Any 'static value, moved in (no Clone needed) and received as is.
    #[derive(Debug, PartialEq)]
    struct Args {
        a: i32,
        k: String,
    }
    let g = Greenlet::new(|v: Value| Ok(v.downcast::<Args>().unwrap()));
    let back = g
        .switch(Args {
            a: 1,
            k: "3".into(),
        })
        .unwrap();
    assert_eq!(
        back.downcast::<Args>().unwrap(),
        Args {
            a: 1,
            k: "3".into()
        }
    );
}

/// b02_switch_value_packing.py: a started greenlet's pending `switch` returns the value sent,
/// unchanged: unit, a number, a 1-tuple (not unwrapped), `None`, a pair; a `Value` is not
/// wrapped again.
#[test]
fn r4_2_value_passed_is_value_received() {
    let out = Log::new();
    let main = getcurrent();
    let child = Greenlet::new({
        let out = out.clone();
        let main = main.clone();
        move |_| -> Result<(), Error> {
            loop {
                let v = main.switch(())?;
                out.say(show(&v));
            }
        }
    });
    child.switch(()).unwrap(); // start it; it suspends in main.switch()
    child.switch(()).unwrap(); // unit
    child.switch(1).unwrap(); // one value
    child.switch((1,)).unwrap(); // a 1-tuple stays a 1-tuple
    child.switch(None::<i32>).unwrap();
    child.switch((1, 2)).unwrap();
    child.switch(Value::new(7)).unwrap(); // a Value passes through unchanged
    child.switch(Value::unit()).unwrap();
    assert_eq!(
        out.lines(),
        ["()", "1", "(1,)", "None", "(1, 2)", "7", "()"]
    );

    // The unit value is recognisable as such on arrival.
    let unit = Greenlet::new(|v: Value| Ok(v.is_unit()))
        .switch(())
        .unwrap();
    assert!(unit.downcast::<bool>().unwrap());
}

/// b10_kwargs_into_running.py, without keywords: a greenlet switching to its parent delivers
/// its value unchanged, and `run`'s result arrives the same way.
#[test]
fn r4_3_value_to_parent_unchanged() {
    let run = |v: Value| -> Result<(i32, i32), Error> {
        let x = v.downcast::<i32>().unwrap();
        let parent = getcurrent().parent().unwrap();
        parent.switch(("x", x))?;
        parent.switch((2, ("x", 3)))?;
        Ok((x, x * x))
    };
    let g = Greenlet::new(run);
    let out = Log::new();
    out.say(show(&g.switch(3).unwrap()));
    out.say(show(&g.switch(()).unwrap()));
    out.say(show(&g.switch(()).unwrap()));
    assert_eq!(out.lines(), ["(\"x\", 3)", "(2, (\"x\", 3))", "(3, 9)"]);
    assert!(g.is_dead());
}

/// b04_switch_returns_later.py (the docs example): `x = g.switch(y)` sends `y`; `x` is what
/// some later transfer brings back. `test2` is never resumed, so it stays alive.
#[test]
fn r4_4_switch_returns_later() {
    let out = Log::new();
    let gr1_cell: Rc<OnceCell<Greenlet>> = Rc::new(OnceCell::new());
    let gr2_cell: Rc<OnceCell<Greenlet>> = Rc::new(OnceCell::new());
    let gr1 = Greenlet::new({
        let out = out.clone();
        let gr2 = gr2_cell.clone();
        move |v: Value| {
            let (x, y) = v.downcast::<(&str, &str)>().unwrap();
            let z = gr2.get().unwrap().switch(format!("{x}{y}"))?;
            out.say(format!("test1 got {}", show(&z)));
            Ok("test1 done")
        }
    });
    let gr2 = Greenlet::new({
        let out = out.clone();
        let gr1 = gr1_cell.clone();
        move |u: Value| {
            out.say(format!("test2 got {}", u.downcast::<String>().unwrap()));
            gr1.get().unwrap().switch(42)?;
            out.say("never printed");
            Ok(())
        }
    });
    gr1_cell.set(gr1.clone()).unwrap();
    gr2_cell.set(gr2.clone()).unwrap();
    let r = gr1.switch(("hello", " world")).unwrap();
    out.say(r.downcast::<&str>().unwrap());
    out.say(format!(
        "{} {} {}",
        gr1.is_dead(),
        gr2.is_dead(),
        gr2.is_active()
    ));
    assert_eq!(
        out.lines(),
        [
            "test2 got hello world",
            "test1 got 42",
            "test1 done",
            "true false true",
        ]
    );
}

fn returns_exactly<T: Clone + PartialEq + Debug + 'static>(ret: T) -> String {
    let g = Greenlet::new({
        let ret = ret.clone();
        move |_| Ok(ret)
    });
    let got = g.switch(()).unwrap().downcast::<T>().unwrap();
    assert_eq!(got, ret);
    format!("{ret:?} -> {got:?} {}", g.is_dead())
}

/// b03_return_value_to_parent.py: `run`'s `Ok(v)` reaches the parent as exactly `v`, 1-tuples
/// and unit included; the greenlet is dead by the time the parent resumes.
#[test]
fn r4_5_return_value_reaches_parent_unchanged() {
    let lines = [
        returns_exactly(None::<i32>),
        returns_exactly(42),
        returns_exactly((1,)),
        returns_exactly((1, 2)),
        returns_exactly(()),
    ];
    assert_eq!(
        lines,
        [
            "None -> None true",
            "42 -> 42 true",
            "(1,) -> (1,) true",
            "(1, 2) -> (1, 2) true",
            "() -> () true",
        ]
    );

    // Dead already when the parent resumes: check from the parent's first instruction after
    // the switch, and from inside the child just before it returns (still alive then).
    let g = Greenlet::new(|_| Ok(getcurrent().is_dead()));
    let was_dead_inside = g.switch(()).unwrap().downcast::<bool>().unwrap();
    assert!(!was_dead_inside);
    assert!(g.is_dead());
}

/// b05_switch_to_self.py: switching to yourself returns the value at once.
#[test]
fn r4_6_switch_to_self() {
    let out = Log::new();
    let main = getcurrent();
    out.say(format!(
        "{} {} {}",
        show(&main.switch(()).unwrap()),
        show(&main.switch(1).unwrap()),
        show(&main.switch((1, 2)).unwrap())
    ));
    let body = {
        let out = out.clone();
        move |_| {
            let me = getcurrent();
            out.say(format!("in child: {}", show(&me.switch("x")?)));
            Ok("end")
        }
    };
    let r = Greenlet::new(body).switch(()).unwrap();
    out.say(r.downcast::<&str>().unwrap());
    assert_eq!(out.lines(), ["() 1 (1, 2)", "in child: \"x\"", "end"]);
    assert!(main.is_current());
}

/// b06_switch_to_dead.py: a switch to a dead greenlet goes to its nearest live ancestor: the
/// caller itself (then it behaves as a switch to self), or a suspended parent, resumed with
/// the value.
#[test]
fn r4_7_switch_to_dead_goes_to_ancestor() {
    let out = Log::new();
    let main = getcurrent();
    let g = Greenlet::new(|_| Ok("r"));
    out.say(format!("{} {}", show(&g.switch(()).unwrap()), g.is_dead()));
    out.say(format!(
        "{} {} {}",
        show(&g.switch(()).unwrap()),
        show(&g.switch(5).unwrap()),
        show(&g.switch((1, 2)).unwrap())
    ));
    // A dead greenlet whose parent is a suspended greenlet: the switch goes to the parent.
    let p = Greenlet::new({
        let out = out.clone();
        let main = main.clone();
        move |_| -> Result<(), Error> {
            loop {
                let v = main.switch("parent suspended")?;
                out.say(format!("parent resumed with {}", show(&v)));
            }
        }
    });
    out.say(show(&p.switch(()).unwrap()));
    let c = Greenlet::builder().parent(&p).build(|_| Ok("child result"));
    out.say(show(&c.switch(()).unwrap())); // c finishes -> p resumes -> p back to main
    out.say(c.is_dead().to_string());
    out.say(show(&c.switch("to dead child").unwrap())); // goes to p
    assert_eq!(
        out.lines(),
        [
            "\"r\" true",
            "() 5 (1, 2)",
            "\"parent suspended\"",
            "parent resumed with \"child result\"",
            "\"parent suspended\"",
            "true",
            "parent resumed with \"to dead child\"",
            "\"parent suspended\"",
        ]
    );
}

/// b07_switch_dead_docs.py (the docs' "Switching To Dead Greenlets"): a switch to the dead
/// `inner` from `outer` (its parent) is a switch to self; from main, it goes to main.
#[test]
fn r4_7_switch_to_dead_docs_example() {
    let out = Log::new();
    let outer = Greenlet::new({
        let out = out.clone();
        move |_| {
            out.say("Entering outer and spawning inner.");
            let inner = Greenlet::new({
                let out = out.clone();
                move |_| {
                    out.say("Entering inner.");
                    out.say("Returning from inner.");
                    Ok(42)
                }
            });
            out.say("Switching to inner.");
            let result = inner.switch(())?;
            out.say(format!("Got from inner value: {}", show(&result)));
            out.say("Switching to inner again.");
            let result = inner.switch(())?;
            out.say(format!("Got from inner value: {}", show(&result)));
            Ok(inner)
        }
    });
    let inner = outer.switch(()).unwrap().downcast::<Greenlet>().unwrap();
    out.say(show(&inner.switch(()).unwrap()));
    assert_eq!(
        out.lines(),
        [
            "Entering outer and spawning inner.",
            "Switching to inner.",
            "Entering inner.",
            "Returning from inner.",
            "Got from inner value: 42",
            "Switching to inner again.",
            "Got from inner value: ()",
            "()",
        ]
    );
}

/// b11_finish_skips_dead_parents.py: a finishing greenlet's result skips dead parents and
/// lands in the first ancestor that is not dead.
#[test]
fn r4_8_finish_skips_dead_parents() {
    let p = Greenlet::new(|_| Ok("p done"));
    p.switch(()).unwrap(); // p is now dead
    let c = Greenlet::builder().parent(&p).build(|_| Ok("c result"));
    let r = c.switch(()).unwrap();
    assert_eq!(format!("{} {}", p.is_dead(), show(&r)), "true \"c result\"");

    // Two dead parents in a row, and from inside a greenlet: the result still lands in the
    // first live ancestor, here the greenlet that started the child (`runner`'s parent chain:
    // c2 -> dead2 -> dead1 -> runner).
    let runner = Greenlet::new(|_| {
        let dead1 = Greenlet::new(|_| Ok(()));
        dead1.switch(())?;
        let dead2 = Greenlet::builder().parent(&dead1).build(|_| Ok(()));
        dead2.switch(())?;
        let c2 = Greenlet::builder()
            .parent(&dead2)
            .build(|_| Ok("c2 result"));
        let r = c2.switch(())?;
        Ok(format!("runner got {}", show(&r)))
    });
    assert_eq!(
        runner.switch(()).unwrap().downcast::<String>().unwrap(),
        "runner got \"c2 result\""
    );
}

/// b08_unstarted_parent_started_by_child.py: an unstarted parent that receives a result is
/// started with it as its `run` value. Python's `TypeError` (a `run` that takes no argument)
/// becomes a parent whose `run` rejects the value: its error goes on up to main, and both are
/// dead.
#[test]
fn r4_9_unstarted_parent_is_started_with_result() {
    let out = Log::new();
    let parent = Greenlet::new(|x: Value| Ok(("parent ran with", x.downcast::<i32>().unwrap())));
    let child = Greenlet::builder().parent(&parent).build(|_| Ok(42));
    out.say(show(&child.switch(()).unwrap()));
    out.say(format!("{} {}", child.is_dead(), parent.is_dead()));

    let parent2 = Greenlet::new(|x: Value| -> Result<i32, Error> {
        if x.is_unit() {
            Ok(13)
        } else {
            Err(Error::msg(format!(
                "takes no value but {} was given",
                show(&x)
            )))
        }
    });
    let child2 = Greenlet::builder().parent(&parent2).build(|_| Ok(42));
    match child2.switch(()) {
        Ok(v) => out.say(format!("ok {}", show(&v))),
        Err(e) => out.say(format!("Error: {e}")),
    }
    out.say(format!("{} {}", child2.is_dead(), parent2.is_dead()));
    assert_eq!(
        out.lines(),
        [
            "(\"parent ran with\", 42)",
            "true true",
            "Error: takes no value but 42 was given",
            "true true",
        ]
    );
}

/// b09_switch_dead_reparent_unstarted.py: a dead greenlet reparented to an unstarted one;
/// switching to the dead greenlet starts the new parent with the switch's value.
#[test]
fn r4_9_switch_to_dead_reparented_to_unstarted() {
    let seen = Rc::new(RefCell::new(Vec::<i32>::new()));
    let never_started = Greenlet::new({
        let seen = seen.clone();
        move |v: Value| {
            assert!(v.is_unit(), "started with the switch's value");
            seen.borrow_mut().push(24);
            Ok(None::<i32>)
        }
    });
    let child = Greenlet::new({
        let seen = seen.clone();
        move |_| {
            seen.borrow_mut().push(42);
            Ok(None::<i32>)
        }
    });
    child.switch(()).unwrap();
    child.set_parent(&never_started).unwrap();
    let r = child.switch(()).unwrap();
    assert_eq!(format!("{} {:?}", show(&r), seen.borrow()), "None [42, 24]");
    assert!(never_started.is_dead());
}
