//! Shrinks a script on which the interpreters diverge to a small one that still diverges.
//!
//! Greedy: try each simplification in turn, keep the first that still fails, start over;
//! stop when none does. Simplifications: drop a def (with or without the steps naming it),
//! drop a run of steps, then make a step simpler (catch instead of propagate, unit values,
//! default parents, smaller tracer counts), and finally rename the greenlets g1, g2, ...

use crate::script::{ErrSpec, Script, Step, TracerSpec, Val};

fn mentions(step: &Step, name: &str) -> bool {
    match step {
        Step::Create { g, parent } => g == name || parent.as_deref() == Some(name),
        Step::Switch { target, .. } | Step::Throw { target, .. } => target == name,
        Step::Drop { g } | Step::State { g } => g == name,
        Step::Reparent { g, parent } => g == name || parent == name,
        Step::Settrace {
            tracer: TracerSpec::SwitchOn { target, .. },
        } => target == name,
        _ => false,
    }
}

fn simpler_steps(step: &Step) -> Vec<Step> {
    let mut out = Vec::new();
    match step {
        Step::Switch {
            target,
            value,
            catch,
        } => {
            if !catch {
                out.push(Step::Switch {
                    target: target.clone(),
                    value: value.clone(),
                    catch: true,
                });
            }
            if *value != Val::Unit {
                out.push(Step::Switch {
                    target: target.clone(),
                    value: Val::Unit,
                    catch: *catch,
                });
            }
        }
        Step::Throw {
            target,
            error,
            catch,
        } => {
            if !catch {
                out.push(Step::Throw {
                    target: target.clone(),
                    error: error.clone(),
                    catch: true,
                });
            }
            if *error != ErrSpec::Exit {
                out.push(Step::Throw {
                    target: target.clone(),
                    error: ErrSpec::Exit,
                    catch: *catch,
                });
            }
            out.push(Step::Switch {
                target: target.clone(),
                value: Val::Unit,
                catch: *catch,
            });
        }
        Step::Return { value } if *value != Val::Unit => {
            out.push(Step::Return { value: Val::Unit });
        }
        Step::Raise { error } => {
            if *error != ErrSpec::Exit {
                out.push(Step::Raise {
                    error: ErrSpec::Exit,
                });
            }
            out.push(Step::Return { value: Val::Unit });
        }
        Step::Create { g, parent: Some(_) } => {
            out.push(Step::Create {
                g: g.clone(),
                parent: None,
            });
        }
        Step::Panic { .. } => {
            out.push(Step::Raise {
                error: ErrSpec::Exit,
            });
            out.push(Step::Return { value: Val::Unit });
        }
        Step::Settrace {
            tracer: TracerSpec::FailOn(n),
        } => {
            out.push(Step::Settrace {
                tracer: TracerSpec::Record,
            });
            if *n > 1 {
                out.push(Step::Settrace {
                    tracer: TracerSpec::FailOn(n - 1),
                });
            }
        }
        Step::Settrace {
            tracer: TracerSpec::ExitOn(n),
        } => {
            out.push(Step::Settrace {
                tracer: TracerSpec::FailOn(*n),
            });
        }
        Step::Settrace {
            tracer: TracerSpec::PanicOn(n),
        } => {
            out.push(Step::Settrace {
                tracer: TracerSpec::FailOn(*n),
            });
            if *n > 1 {
                out.push(Step::Settrace {
                    tracer: TracerSpec::PanicOn(n - 1),
                });
            }
        }
        Step::Settrace {
            tracer: TracerSpec::SwitchOn { n, target, value },
        } => {
            out.push(Step::Settrace {
                tracer: TracerSpec::Record,
            });
            if *n > 1 {
                let tracer = TracerSpec::SwitchOn {
                    n: n - 1,
                    target: target.clone(),
                    value: value.clone(),
                };
                out.push(Step::Settrace { tracer });
            }
            if *value != Val::Unit {
                let tracer = TracerSpec::SwitchOn {
                    n: *n,
                    target: target.clone(),
                    value: Val::Unit,
                };
                out.push(Step::Settrace { tracer });
            }
        }
        _ => {}
    }
    out
}

/// Every one-move simplification of `s`, most promising first.
fn candidates(s: &Script) -> Vec<Script> {
    let mut out = Vec::new();
    for i in 0..s.defs.len() {
        let name = s.defs[i].name.clone();
        let mut c = s.clone();
        c.defs.remove(i);
        for body in c.bodies_mut() {
            body.retain(|st| !mentions(st, &name));
        }
        out.push(c);
        let mut c = s.clone();
        c.defs.remove(i);
        for body in c.bodies_mut() {
            body.retain(|st| !matches!(st, Step::Create { g, .. } if *g == name));
        }
        out.push(c);
    }
    let nbodies = 1 + s.defs.len();
    for b in 0..nbodies {
        let len = if b == 0 {
            s.main.len()
        } else {
            s.defs[b - 1].body.len()
        };
        let mut chunk = len;
        while chunk >= 1 {
            let mut start = 0;
            while start + chunk <= len {
                let mut c = s.clone();
                c.bodies_mut().nth(b).unwrap().drain(start..start + chunk);
                out.push(c);
                start += chunk;
            }
            chunk /= 2;
        }
    }
    for b in 0..nbodies {
        let body = if b == 0 { &s.main } else { &s.defs[b - 1].body };
        for (i, st) in body.iter().enumerate() {
            for simpler in simpler_steps(st) {
                let mut c = s.clone();
                c.bodies_mut().nth(b).unwrap()[i] = simpler;
                out.push(c);
            }
        }
    }
    out
}

/// Renames the defs g1, g2, ... in order of appearance.
fn renamed(s: &Script) -> Script {
    let map: Vec<(String, String)> = s
        .defs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.clone(), format!("g{}", i + 1)))
        .collect();
    let tmp = |n: &str| format!("__{n}");
    let mut out = s.clone();
    for (pass, (from, to)) in [false, true]
        .iter()
        .flat_map(|p| map.iter().map(move |m| (*p, m)))
    {
        let (a, b) = if pass {
            (tmp(from), to.clone())
        } else {
            (from.clone(), tmp(from))
        };
        let fix = |n: &mut String| {
            if *n == a {
                *n = b.clone();
            }
        };
        for d in &mut out.defs {
            fix(&mut d.name);
        }
        for body in out.bodies_mut() {
            for st in body.iter_mut() {
                match st {
                    Step::Create { g, parent } => {
                        fix(g);
                        if let Some(p) = parent {
                            fix(p);
                        }
                    }
                    Step::Switch { target, .. } | Step::Throw { target, .. } => fix(target),
                    Step::Drop { g } | Step::State { g } => fix(g),
                    Step::Reparent { g, parent } => {
                        fix(g);
                        fix(parent);
                    }
                    Step::Settrace {
                        tracer: TracerSpec::SwitchOn { target, .. },
                    } => fix(target),
                    _ => {}
                }
            }
        }
    }
    out
}

/// The smallest script reachable from `s` by simplifications that keep `fails` true.
pub fn shrink(s: &Script, mut fails: impl FnMut(&Script) -> bool) -> Script {
    let mut best = s.clone();
    'outer: loop {
        for c in candidates(&best) {
            if fails(&c) {
                best = c;
                continue 'outer;
            }
        }
        break;
    }
    let r = renamed(&best);
    if r != best && fails(&r) {
        r
    } else {
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_to_the_step_that_matters() {
        let s = Script::parse(
            "main:\n    create g1\n    print a\n    switch g1 5 ?\n    print b\n    state g1\n\
             def g1:\n    print c\n    raise error(E1)\n",
        )
        .unwrap();
        // "Fails" while some body raises error(E1) and main still switches.
        let fails = |s: &Script| {
            let text = s.to_text();
            text.contains("raise error(E1)") && text.contains("switch")
        };
        let small = shrink(&s, fails);
        assert_eq!(
            small.to_text(),
            "main:\n    switch g1 ()\ndef g1:\n    raise error(E1)\n"
        );
    }
}
