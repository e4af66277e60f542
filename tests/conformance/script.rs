//! The script language: its syntax tree, its JSON form (what both interpreters read) and its
//! text form (regression files; `conformance/README.md` describes both).

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

/// A whole program: the main greenlet's body and the bodies of the greenlets it may create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    pub defs: Vec<Def>,
    pub main: Vec<Step>,
}

/// The body of the greenlet named `name`, created by a `create` step somewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Def {
    pub name: String,
    pub body: Vec<Step>,
}

/// A value a script can switch with or return.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Val {
    Unit,
    Int(i64),
    Str(String),
    /// A `GreenletExit` passed as a plain value.
    Exit,
}

/// An error a script can throw or raise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrSpec {
    /// A user error with a tag (Python: `ScriptError(tag)`).
    User(String),
    /// `GreenletExit`.
    Exit,
}

/// What `settrace` installs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TracerSpec {
    None,
    Record,
    /// Records events and fails on the N-th one (counted from 1).
    FailOn(u32),
    /// Records events and panics on the N-th one.
    PanicOn(u32),
    /// Records events and returns `GreenletExit` as its error on the N-th one.
    ExitOn(u32),
    /// Records events and, on the N-th one, switches to `target` with `value` (once); what
    /// comes back, value or error, is logged and swallowed.
    SwitchOn {
        n: u32,
        target: String,
        value: Val,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Step {
    /// Creates greenlet `g` running `def g`, with the given parent or the creator.
    Create {
        g: String,
        parent: Option<String>,
    },
    /// `target.switch(value)`; an error coming out is logged, then swallowed (`catch`) or
    /// propagated out of the body.
    Switch {
        target: String,
        value: Val,
        catch: bool,
    },
    /// `target.throw(error)`, with the same outcome handling as `switch`.
    Throw {
        target: String,
        error: ErrSpec,
        catch: bool,
    },
    Return {
        value: Val,
    },
    Raise {
        error: ErrSpec,
    },
    /// Panics (Python: raises `ScriptPanic`, a BaseException).
    Panic {
        tag: String,
    },
    /// Drops the script's handle to `g` (usually the last one).
    Drop {
        g: String,
    },
    Reparent {
        g: String,
        parent: String,
    },
    Settrace {
        tracer: TracerSpec,
    },
    Gettrace,
    Print {
        text: String,
    },
    State {
        g: String,
    },
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Unit => f.write_str("()"),
            Val::Int(i) => write!(f, "{i}"),
            Val::Str(s) => write!(f, "{}", serde_json::to_string(s).unwrap()),
            Val::Exit => f.write_str("<exit>"),
        }
    }
}

impl fmt::Display for ErrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrSpec::User(tag) => write!(f, "error({tag})"),
            ErrSpec::Exit => f.write_str("exit"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = |catch: &bool| if *catch { "" } else { " ?" };
        match self {
            Step::Create { g, parent: None } => write!(f, "create {g}"),
            Step::Create { g, parent: Some(p) } => write!(f, "create {g} parent={p}"),
            Step::Switch {
                target,
                value,
                catch,
            } => {
                write!(f, "switch {target} {value}{}", q(catch))
            }
            Step::Throw {
                target,
                error,
                catch,
            } => {
                write!(f, "throw {target} {error}{}", q(catch))
            }
            Step::Return { value } => write!(f, "return {value}"),
            Step::Raise { error } => write!(f, "raise {error}"),
            Step::Panic { tag } => write!(f, "panic {tag}"),
            Step::Drop { g } => write!(f, "drop {g}"),
            Step::Reparent { g, parent } => write!(f, "reparent {g} {parent}"),
            Step::Settrace {
                tracer: TracerSpec::None,
            } => f.write_str("settrace none"),
            Step::Settrace {
                tracer: TracerSpec::Record,
            } => f.write_str("settrace record"),
            Step::Settrace {
                tracer: TracerSpec::FailOn(n),
            } => write!(f, "settrace fail {n}"),
            Step::Settrace {
                tracer: TracerSpec::PanicOn(n),
            } => write!(f, "settrace panic {n}"),
            Step::Settrace {
                tracer: TracerSpec::ExitOn(n),
            } => write!(f, "settrace exit {n}"),
            Step::Settrace {
                tracer: TracerSpec::SwitchOn { n, target, value },
            } => {
                write!(f, "settrace switch {n} {target} {value}")
            }
            Step::Gettrace => f.write_str("gettrace"),
            Step::Print { text } => write!(f, "print {text}"),
            Step::State { g } => write!(f, "state {g}"),
        }
    }
}

impl Script {
    /// The text form: `main:` and `def NAME:` headers, one indented step per line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut body = |head: &str, steps: &[Step]| {
            writeln!(out, "{head}:").unwrap();
            for s in steps {
                writeln!(out, "    {s}").unwrap();
            }
        };
        body("main", &self.main);
        for d in &self.defs {
            body(&format!("def {}", d.name), &d.body);
        }
        out
    }

    /// Parses the text form; `#` starts a comment (except in a `print` line).
    pub fn parse(text: &str) -> Result<Script, String> {
        let mut script = Script {
            defs: Vec::new(),
            main: Vec::new(),
        };
        // Which body steps go to: None before any header, Some(None) main, Some(Some(i)) defs[i].
        let mut at: Option<Option<usize>> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = if raw.trim_start().starts_with("print ") {
                raw
            } else {
                raw.split('#').next().unwrap()
            };
            if line.trim().is_empty() {
                continue;
            }
            let fail = |e: String| format!("line {}: {e}", n + 1);
            if !line.starts_with(char::is_whitespace) {
                let head = line.trim();
                if head == "main:" {
                    at = Some(None);
                } else if let Some(name) =
                    head.strip_prefix("def ").and_then(|h| h.strip_suffix(':'))
                {
                    script.defs.push(Def {
                        name: name.trim().to_string(),
                        body: Vec::new(),
                    });
                    at = Some(Some(script.defs.len() - 1));
                } else {
                    return Err(fail("expected `main:` or `def NAME:`".into()));
                }
                continue;
            }
            let step = parse_step(line.trim()).map_err(fail)?;
            match at {
                None => return Err(fail("step outside a body".into())),
                Some(None) => script.main.push(step),
                Some(Some(i)) => script.defs[i].body.push(step),
            }
        }
        Ok(script)
    }

    /// Every step of every body, mutably (for the shrinker).
    pub fn bodies_mut(&mut self) -> impl Iterator<Item = &mut Vec<Step>> {
        std::iter::once(&mut self.main).chain(self.defs.iter_mut().map(|d| &mut d.body))
    }
}

fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut end = line.len();
            while let Some((j, c)) = chars.next() {
                if c == '\\' {
                    chars.next();
                } else if c == '"' {
                    end = j + 1;
                    break;
                }
            }
            out.push(line[i..end].to_string());
        } else {
            let mut end = line.len();
            while let Some(&(j, c)) = chars.peek() {
                if c.is_whitespace() {
                    end = j;
                    break;
                }
                chars.next();
            }
            out.push(line[i..end].to_string());
        }
    }
    out
}

fn parse_val(tok: &str) -> Result<Val, String> {
    match tok {
        "()" => Ok(Val::Unit),
        "<exit>" => Ok(Val::Exit),
        t if t.starts_with('"') => serde_json::from_str(t)
            .map(Val::Str)
            .map_err(|e| format!("bad string {t}: {e}")),
        t => t
            .parse()
            .map(Val::Int)
            .map_err(|_| format!("bad value `{t}`")),
    }
}

fn parse_err(tok: &str) -> Result<ErrSpec, String> {
    if tok == "exit" {
        return Ok(ErrSpec::Exit);
    }
    tok.strip_prefix("error(")
        .and_then(|t| t.strip_suffix(')'))
        .map(|t| ErrSpec::User(t.to_string()))
        .ok_or_else(|| format!("bad error `{tok}`"))
}

fn count(tok: &str) -> Result<u32, String> {
    tok.parse().map_err(|_| format!("bad count `{tok}`"))
}

fn parse_step(line: &str) -> Result<Step, String> {
    if let Some(text) = line.strip_prefix("print ") {
        return Ok(Step::Print {
            text: text.to_string(),
        });
    }
    let mut toks = tokens(line);
    let op = toks.remove(0);
    let catch = if toks.last().map(String::as_str) == Some("?") {
        toks.pop();
        false
    } else {
        true
    };
    let need = |n: usize| {
        if toks.len() == n {
            Ok(())
        } else {
            Err(format!("`{op}` takes {n} operands"))
        }
    };
    Ok(match op.as_str() {
        "create" => match toks.as_slice() {
            [g] => Step::Create {
                g: g.clone(),
                parent: None,
            },
            [g, p] if p.starts_with("parent=") => Step::Create {
                g: g.clone(),
                parent: Some(p["parent=".len()..].to_string()),
            },
            _ => return Err("usage: create NAME [parent=NAME]".into()),
        },
        "switch" => {
            need(2)?;
            Step::Switch {
                target: toks[0].clone(),
                value: parse_val(&toks[1])?,
                catch,
            }
        }
        "throw" => {
            need(2)?;
            Step::Throw {
                target: toks[0].clone(),
                error: parse_err(&toks[1])?,
                catch,
            }
        }
        "return" => {
            need(1)?;
            Step::Return {
                value: parse_val(&toks[0])?,
            }
        }
        "raise" => {
            need(1)?;
            Step::Raise {
                error: parse_err(&toks[0])?,
            }
        }
        "panic" => {
            need(1)?;
            Step::Panic {
                tag: toks[0].clone(),
            }
        }
        "drop" => {
            need(1)?;
            Step::Drop { g: toks[0].clone() }
        }
        "state" => {
            need(1)?;
            Step::State { g: toks[0].clone() }
        }
        "reparent" => {
            need(2)?;
            Step::Reparent {
                g: toks[0].clone(),
                parent: toks[1].clone(),
            }
        }
        "settrace" => match toks.as_slice() {
            [w] if w == "none" => Step::Settrace {
                tracer: TracerSpec::None,
            },
            [w] if w == "record" => Step::Settrace {
                tracer: TracerSpec::Record,
            },
            [w, n] if w == "fail" => Step::Settrace {
                tracer: TracerSpec::FailOn(count(n)?),
            },
            [w, n] if w == "exit" => Step::Settrace {
                tracer: TracerSpec::ExitOn(count(n)?),
            },
            [w, n] if w == "panic" => Step::Settrace {
                tracer: TracerSpec::PanicOn(count(n)?),
            },
            [w, n, t, v] if w == "switch" => Step::Settrace {
                tracer: TracerSpec::SwitchOn {
                    n: count(n)?,
                    target: t.clone(),
                    value: parse_val(v)?,
                },
            },
            _ => {
                return Err(
                    "usage: settrace none|record|fail N|exit N|panic N|switch N TARGET VALUE"
                        .into(),
                )
            }
        },
        "gettrace" => {
            need(0)?;
            Step::Gettrace
        }
        other => return Err(format!("unknown step `{other}`")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let text = "main:\n    create g1\n    create g2 parent=g1\n    switch g1 \"a b\" ?\n    \
                    throw g2 error(E1)\n    throw g2 exit ?\n    settrace fail 3\n    gettrace\n    \
                    settrace panic 2\n    settrace switch 1 g2 \"x\"\n    panic P1\n\
                    def g1:\n    return <exit>\n    raise exit\n    drop g2\n    reparent g1 main\n    \
                    print hello # world\n    state g2\n    switch main ()\n    switch main -4\n";
        let s = Script::parse(text).unwrap();
        assert_eq!(s.to_text(), text);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Script>(&json).unwrap(), s);
    }

    #[test]
    fn bad_text_is_refused_with_a_line_number() {
        assert_eq!(
            Script::parse("main:\n    warp g1\n").unwrap_err(),
            "line 2: unknown step `warp`"
        );
        assert!(Script::parse("    switch g1 ()\n").is_err());
        assert!(Script::parse("main:\n    switch g1\n").is_err());
    }
}
