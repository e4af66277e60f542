//! The Rust interpreter of the script language, on this crate's runtime. It writes the same
//! canonical transcript as `conformance/interp.py` does on Python greenlet; the line formats
//! and the normalisations are listed in `conformance/README.md`.
//!
//! Like the Python interpreter, it holds a greenlet handle across a switch only for the target
//! of that switch, so the last handle to a greenlet goes away at the same step on both sides.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use greenlet::{
    getcurrent, gettrace, kill_all, panic_message, set_kill_hook, settrace, Error, Event, Greenlet,
    GreenletExit, KillFailure, Tracer, Value,
};

use crate::script::{ErrSpec, Script, Step, TracerSpec, Val};

/// The script's user error, `error(TAG)` (Python: `ScriptError(tag)`).
#[derive(Debug)]
pub struct ScriptError(pub String);

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScriptError {}

/// The payload of a script panic, `panic(TAG)` (Python: the BaseException `ScriptPanic(tag)`).
#[derive(Debug)]
pub struct ScriptPanic(pub String);

/// The canonical text of a panic payload; `None` for a panic that is not the script's.
fn fmt_panic(payload: &(dyn Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<ScriptPanic>()
        .map(|ScriptPanic(tag)| format!("panic({tag})"))
}

/// Raises a script panic without calling the panic hook (nothing is printed).
fn script_panic(tag: String) -> ! {
    panic::resume_unwind(Box::new(ScriptPanic(tag)))
}

/// `target.switch(value)`, catching a script panic; another panic keeps unwinding.
fn switch_catching(
    t: &Greenlet,
    value: Value,
) -> Result<Result<Value, Error>, Box<dyn Any + Send>> {
    panic::catch_unwind(AssertUnwindSafe(|| t.switch(value)))
}

struct State {
    defs: HashMap<String, Rc<Vec<Step>>>,
    vars: RefCell<BTreeMap<String, Greenlet>>,
    /// Names in creation order, for the `final` lines.
    created: RefCell<Vec<String>>,
    lines: RefCell<Vec<String>>,
    /// Set at teardown: bodies then return at once and nothing more is logged.
    finished: Cell<bool>,
    tracers: RefCell<Vec<(Tracer, u32)>>,
    next_tid: Cell<u32>,
}

impl State {
    fn log(&self, line: String) {
        if !self.finished.get() {
            self.lines.borrow_mut().push(line);
        }
    }

    fn var(&self, name: &str) -> Option<Greenlet> {
        self.vars.borrow().get(name).cloned()
    }

    fn tracer_name(&self, t: Option<Tracer>) -> String {
        match t {
            None => "none".to_string(),
            Some(t) => {
                let tid = self
                    .tracers
                    .borrow()
                    .iter()
                    .find(|(x, _)| *x == t)
                    .map_or(0, |p| p.1);
                format!("t{tid}")
            }
        }
    }
}

pub fn name_of(g: &Greenlet) -> String {
    match g.name() {
        Some(n) => n.to_string(),
        None if g.is_main() => "main".to_string(),
        None => "?".to_string(),
    }
}

fn state_of(g: &Greenlet) -> &'static str {
    if g.is_dead() {
        "dead"
    } else if !g.is_started() {
        "unstarted"
    } else if g.is_current() {
        "current"
    } else {
        "suspended"
    }
}

/// Canonical text of a received value (the unit value is `()`, a `GreenletExit` is `<exit>`).
fn fmt_value(v: &Value) -> String {
    if v.is_unit() {
        "()".to_string()
    } else if let Some(i) = v.downcast_ref::<i64>() {
        i.to_string()
    } else if let Some(s) = v.downcast_ref::<String>() {
        serde_json::to_string(s).unwrap()
    } else if v.is::<GreenletExit>() {
        "<exit>".to_string()
    } else {
        format!("?{v:?}")
    }
}

fn fmt_error(e: &Error) -> String {
    match e {
        Error::Exit(_) => "exit".to_string(),
        e => match e.downcast_ref::<ScriptError>() {
            Some(ScriptError(tag)) => format!("error({tag})"),
            None => format!("internal({e:?})"),
        },
    }
}

fn make_value(v: &Val) -> Value {
    match v {
        Val::Unit => Value::unit(),
        Val::Int(i) => Value::new(*i),
        Val::Str(s) => Value::new(s.clone()),
        Val::Exit => Value::new(GreenletExit::new()),
    }
}

fn make_error(e: &ErrSpec) -> Error {
    match e {
        ErrSpec::Exit => Error::Exit(GreenletExit::new()),
        ErrSpec::User(tag) => Error::user(ScriptError(tag.clone())),
    }
}

fn make_tracer(st: &Rc<State>, tid: u32, spec: TracerSpec) -> Tracer {
    let st = st.clone();
    let seen = Cell::new(0);
    let at = match &spec {
        TracerSpec::FailOn(n)
        | TracerSpec::ExitOn(n)
        | TracerSpec::PanicOn(n)
        | TracerSpec::SwitchOn { n, .. } => *n,
        TracerSpec::None | TracerSpec::Record => 0,
    };
    Tracer::new(move |ev: &Event| {
        if st.finished.get() {
            return Ok(());
        }
        seen.set(seen.get() + 1);
        st.log(format!(
            "trace {} {} -> {}",
            ev.kind().as_str(),
            name_of(ev.origin()),
            name_of(ev.target())
        ));
        if seen.get() != at {
            return Ok(());
        }
        match &spec {
            TracerSpec::FailOn(_) => {
                st.log(format!("t{tid} fails"));
                return Err(Error::user(ScriptError(format!("t{tid}"))));
            }
            TracerSpec::ExitOn(_) => {
                st.log(format!("t{tid} exits"));
                return Err(Error::Exit(GreenletExit::new()));
            }
            TracerSpec::PanicOn(_) => {
                st.log(format!("t{tid} panics"));
                script_panic(format!("t{tid}"));
            }
            TracerSpec::SwitchOn { target, value, .. } => {
                let text = format!("t{tid} switch {target} {value}");
                let Some(t) = st.var(target) else {
                    st.log(format!("{text}: missing"));
                    return Ok(());
                };
                st.log(text);
                let result = switch_catching(&t, make_value(value));
                drop(t);
                match result {
                    Ok(Ok(v)) => st.log(format!("t{tid} got {}", fmt_value(&v))),
                    Ok(Err(e)) => st.log(format!("t{tid} caught {}", fmt_error(&e))),
                    Err(p) => match fmt_panic(p.as_ref()) {
                        Some(text) => st.log(format!("t{tid} caught {text}")),
                        None => panic::resume_unwind(p),
                    },
                }
            }
            TracerSpec::None | TracerSpec::Record => {}
        }
        Ok(())
    })
}

fn run_greenlet(st: &Rc<State>, me: &str, v: Value) -> Result<Value, Error> {
    if st.finished.get() {
        return Ok(Value::unit());
    }
    // Normalisation N3 (README): a GreenletExit start value is written `()`. Python greenlet
    // starts an unstarted parent with no arguments at all when a child's GreenletExit is the
    // result it passes on (it uses the exception object as the argument tuple).
    let start = if v.is::<GreenletExit>() {
        "()".to_string()
    } else {
        fmt_value(&v)
    };
    st.log(format!("[{me}] start {start}"));
    drop(v);
    let body = st.defs[me].clone();
    exec_body(st, me, &body)
}

fn exec_body(st: &Rc<State>, me: &str, steps: &[Step]) -> Result<Value, Error> {
    for step in steps {
        if st.finished.get() {
            return Ok(Value::unit());
        }
        match step {
            Step::Create { g, parent } => {
                let text = match parent {
                    None => format!("[{me}] create {g}"),
                    Some(p) => format!("[{me}] create {g} parent={p}"),
                };
                if st.vars.borrow().contains_key(g) || !st.defs.contains_key(g) {
                    st.log(format!("{text}: exists"));
                    continue;
                }
                let parent = match parent {
                    None => None,
                    Some(p) => match st.var(p) {
                        None => {
                            st.log(format!("{text}: missing"));
                            continue;
                        }
                        some => some,
                    },
                };
                st.log(text);
                let mut b = Greenlet::builder().name(g.clone());
                if let Some(p) = &parent {
                    b = b.parent(p);
                }
                drop(parent);
                let st2 = st.clone();
                let name = g.clone();
                let new = b.build(move |v: Value| run_greenlet(&st2, &name, v));
                st.vars.borrow_mut().insert(g.clone(), new);
                st.created.borrow_mut().push(g.clone());
            }
            Step::Switch { target, catch, .. } | Step::Throw { target, catch, .. } => {
                let text = match step {
                    Step::Switch { value, .. } => format!("[{me}] switch {target} {value}"),
                    Step::Throw { error, .. } => format!("[{me}] throw {target} {error}"),
                    _ => unreachable!(),
                };
                let Some(t) = st.var(target) else {
                    st.log(format!("{text}: missing"));
                    continue;
                };
                st.log(text);
                let result = match step {
                    Step::Switch { value, .. } => switch_catching(&t, make_value(value)),
                    Step::Throw { error, .. } => {
                        panic::catch_unwind(AssertUnwindSafe(|| t.throw(make_error(error))))
                    }
                    _ => unreachable!(),
                };
                drop(t);
                if st.finished.get() {
                    return Ok(Value::unit());
                }
                match result {
                    Ok(Ok(v)) => st.log(format!("[{me}] got {}", fmt_value(&v))),
                    Ok(Err(e)) if *catch => st.log(format!("[{me}] caught {}", fmt_error(&e))),
                    Ok(Err(e)) => {
                        st.log(format!("[{me}] uncaught {}", fmt_error(&e)));
                        return Err(e);
                    }
                    Err(p) => match fmt_panic(p.as_ref()) {
                        Some(text) if *catch => st.log(format!("[{me}] caught {text}")),
                        Some(text) => {
                            st.log(format!("[{me}] uncaught {text}"));
                            panic::resume_unwind(p);
                        }
                        None => panic::resume_unwind(p),
                    },
                }
            }
            Step::Return { value } => {
                st.log(format!("[{me}] return {value}"));
                return Ok(make_value(value));
            }
            Step::Raise { error } => {
                st.log(format!("[{me}] raise {error}"));
                return Err(make_error(error));
            }
            Step::Panic { tag } => {
                st.log(format!("[{me}] panic {tag}"));
                script_panic(tag.clone());
            }
            Step::Drop { g } => {
                if g == "main" || !st.vars.borrow().contains_key(g) {
                    st.log(format!("[{me}] drop {g}: missing"));
                    continue;
                }
                st.log(format!("[{me}] drop {g}"));
                let handle = st.vars.borrow_mut().remove(g);
                drop(handle); // the last handle may go here: the kill runs inside this drop
            }
            Step::Reparent { g, parent } => {
                let text = format!("[{me}] reparent {g} {parent}");
                let (Some(child), Some(p)) = (st.var(g), st.var(parent)) else {
                    st.log(format!("{text}: missing"));
                    continue;
                };
                let result = child.set_parent(&p);
                // Release both handles before logging, as Python does at the end of the
                // assignment: one may be the last (a kill run by set_parent dropped a var).
                drop((child, p));
                let outcome = match result {
                    Ok(()) => "ok".to_string(),
                    Err(Error::CyclicParent) => "cyclic".to_string(),
                    Err(Error::MainGreenletParent) => "main".to_string(),
                    Err(e) => fmt_error(&e),
                };
                st.log(format!("{text}: {outcome}"));
            }
            Step::Settrace {
                tracer: TracerSpec::None,
            } => {
                let prev = settrace(None);
                st.log(format!(
                    "[{me}] settrace none (prev {})",
                    st.tracer_name(prev)
                ));
            }
            Step::Settrace { tracer } => {
                let tid = st.next_tid.get();
                st.next_tid.set(tid + 1);
                let what = match tracer {
                    TracerSpec::FailOn(n) => format!("fail {n}"),
                    TracerSpec::PanicOn(n) => format!("panic {n}"),
                    TracerSpec::ExitOn(n) => format!("exit {n}"),
                    TracerSpec::SwitchOn { n, target, value } => {
                        format!("switch {n} {target} {value}")
                    }
                    TracerSpec::None | TracerSpec::Record => "record".to_string(),
                };
                let t = make_tracer(st, tid, tracer.clone());
                st.tracers.borrow_mut().push((t.clone(), tid));
                let prev = settrace(Some(t));
                st.log(format!(
                    "[{me}] settrace t{tid} {what} (prev {})",
                    st.tracer_name(prev)
                ));
            }
            Step::Gettrace => {
                st.log(format!("[{me}] gettrace {}", st.tracer_name(gettrace())));
            }
            Step::Print { text } => st.log(format!("[{me}] print {text}")),
            Step::State { g } => match st.var(g) {
                None => st.log(format!("[{me}] state {g}: missing")),
                Some(h) => {
                    let parent = h.parent().map_or("none".to_string(), |p| name_of(&p));
                    st.log(format!(
                        "[{me}] state {g}: {} parent={parent}",
                        state_of(&h)
                    ));
                }
            },
        }
    }
    st.log(format!("[{me}] return ()"));
    Ok(Value::unit())
}

/// Runs `script` on the calling thread, which must be a fresh thread (its main greenlet is the
/// script's `main`), and returns the transcript.
pub fn run(script: &Script) -> Vec<String> {
    let st = Rc::new(State {
        defs: script
            .defs
            .iter()
            .map(|d| (d.name.clone(), Rc::new(d.body.clone())))
            .collect(),
        vars: RefCell::new(BTreeMap::new()),
        created: RefCell::new(Vec::new()),
        lines: RefCell::new(Vec::new()),
        finished: Cell::new(false),
        tracers: RefCell::new(Vec::new()),
        next_tid: Cell::new(1),
    });
    st.vars
        .borrow_mut()
        .insert("main".to_string(), getcurrent());
    let hook_st = st.clone();
    set_kill_hook(Some(Rc::new(move |g: &Greenlet, failure: &KillFailure| {
        let line = match failure {
            KillFailure::Error(e) => format!("unraisable {} from {}", fmt_error(e), name_of(g)),
            KillFailure::Survived => format!("leak {}", name_of(g)),
            KillFailure::Panic(p) => format!(
                "unraisable {} from {}",
                fmt_panic(p.as_ref())
                    .unwrap_or_else(|| format!("internal panic: {}", panic_message(p.as_ref()))),
                name_of(g)
            ),
            other => format!("unraisable {other:?} from {}", name_of(g)),
        };
        hook_st.log(line);
    })));
    settrace(None);

    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        // An error or a script panic leaving main was logged as `uncaught` (or `panic`).
        match panic::catch_unwind(AssertUnwindSafe(|| exec_body(&st, "main", &script.main))) {
            Ok(_) => {}
            Err(p) if fmt_panic(p.as_ref()).is_some() => {}
            Err(p) => panic::resume_unwind(p),
        }
        st.log("[main] end".to_string());
        for name in st.created.borrow().iter() {
            if let Some(g) = st.var(name) {
                st.log(format!("final {name}: {}", state_of(&g)));
            }
        }
    }));
    if let Err(p) = outcome {
        st.lines
            .borrow_mut()
            .push(format!("internal panic: {}", panic_message(p.as_ref())));
    }

    // Teardown: nothing below is logged; every body returns at once.
    st.finished.set(true);
    settrace(None);
    let _ = panic::catch_unwind(AssertUnwindSafe(kill_all));
    st.vars.borrow_mut().clear();
    st.tracers.borrow_mut().clear();
    set_kill_hook(None);
    st.lines.take()
}
