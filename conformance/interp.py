#!/usr/bin/env python3
"""Reference interpreter of the greenlet conformance script language, on Python greenlet.

The language and the canonical transcript are described in conformance/README.md; the Rust
interpreter in tests/conformance/interp.rs must write the very same transcript for the same
script on the Rust runtime.

Usage:
    interp.py FILE            run one script (.json, or the text form) and print its transcript
    interp.py --server        read one JSON script per line on stdin, write one JSON transcript
                              (a list of lines) per line on stdout, flushing after each
    interp.py --to-json FILE  parse a text-form script and print its JSON form

Exit status 2 with one line on stderr for a bad file or bad arguments.
"""

import gc
import json
import sys
import weakref

import greenlet

GreenletExit = greenlet.GreenletExit


class ScriptError(Exception):
    """The script's user error, `error(TAG)`; the Rust side uses `Error::user(ScriptError)`."""

    def __init__(self, tag):
        super().__init__(tag)
        self.tag = tag


class ScriptPanic(BaseException):
    """A Rust panic in the script (`panic TAG`); Python has none, so the interpreter raises this
    exception, which derives from BaseException like GreenletExit does (normalisation N4)."""

    def __init__(self, tag):
        super().__init__(tag)
        self.tag = tag


class ScriptSyntaxError(Exception):
    pass


CAUGHT = (ScriptError, GreenletExit, ScriptPanic)

UNIT = ("unit",)  # sentinel for the script value `()`


# ---------------------------------------------------------------------------------------------
# Canonical forms


def fmt_value(v):
    """Canonical text of a value received from greenlet.

    Normalisations (README, "Normalisations"): Python's `()` (what `switch()` with no argument
    delivers) and `None` (what a body returning nothing gives) are both the unit value `()`;
    a GreenletExit instance received as a value is `<exit>` whatever its message.
    """
    if v is UNIT or v is None or v == ():
        return "()"
    if isinstance(v, GreenletExit):
        return "<exit>"
    if isinstance(v, bool):
        return "?bool"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    return "?" + type(v).__name__


def fmt_error(e):
    if isinstance(e, GreenletExit):
        return "exit"
    if isinstance(e, ScriptError):
        return "error(%s)" % e.tag
    if isinstance(e, ScriptPanic):
        return "panic(%s)" % e.tag
    return "internal(%s: %s)" % (type(e).__name__, e)


def fmt_script_value(v):
    if v == "Unit":
        return "()"
    if v == "Exit":
        return "<exit>"
    if "Int" in v:
        return str(v["Int"])
    return json.dumps(v["Str"])


def fmt_script_error(e):
    if e == "Exit":
        return "exit"
    return "error(%s)" % e["User"]


def py_value(v):
    """The Python object a script value is switched as (None for the unit value: no argument)."""
    if v == "Unit":
        return UNIT
    if v == "Exit":
        return GreenletExit()
    if "Int" in v:
        return v["Int"]
    return v["Str"]


def py_error(e):
    if e == "Exit":
        return GreenletExit()
    return ScriptError(e["User"])


def name_of(g):
    if g is None:
        return "none"
    return getattr(g, "name", "?")


def state_of(g):
    if g.dead:
        return "dead"
    if not g:
        return "unstarted"
    if g is greenlet.getcurrent():
        return "current"
    return "suspended"


# ---------------------------------------------------------------------------------------------
# The interpreter


class Tracer:
    """A script tracer: logs each event; on its N-th event (`at`) it may raise an error
    (`fail`), panic (`panic`) or switch to another greenlet (`switch`, once)."""

    def __init__(self, interp, tid, action, at, target=None, value=None):
        self.interp = interp
        self.tid = tid
        self.action = action
        self.at = at
        self.target = target
        self.value = value
        self.seen = 0

    def __call__(self, event, args):
        interp = self.interp
        if interp.finished:
            return
        origin, target = args
        line = "trace %s %s -> %s" % (event, name_of(origin), name_of(target))
        # No greenlet may stay referenced from this frame: when the tracer raises, the
        # exception's traceback keeps the frame (and so its locals) alive in the target,
        # which would delay a kill on last-handle drop compared with Rust.
        del origin, target, args
        self.seen += 1
        interp.log(line)
        if self.seen != self.at:
            return
        if self.action == "fail":
            interp.log("t%d fails" % self.tid)
            raise ScriptError("t%d" % self.tid)
        if self.action == "exit":
            interp.log("t%d exits" % self.tid)
            raise GreenletExit()
        if self.action == "panic":
            interp.log("t%d panics" % self.tid)
            raise ScriptPanic("t%d" % self.tid)
        if self.action == "switch":
            t = self.target
            text = "t%d switch %s %s" % (self.tid, t, fmt_script_value(self.value))
            if t not in interp.vars:
                interp.log(text + ": missing")
                return
            interp.log(text)
            try:
                v = py_value(self.value)
                if v is UNIT:
                    r = interp.vars[t].switch()
                else:
                    r = interp.vars[t].switch(v)
                v = None
            except CAUGHT as e:
                interp.log("t%d caught %s" % (self.tid, fmt_error(e)))
                return
            interp.log("t%d got %s" % (self.tid, fmt_value(r)))


class StderrCatcher:
    """Stands in for sys.stderr while a script runs, to catch `GreenletExit did not kill`."""

    def __init__(self, interp):
        self.interp = interp
        self.buf = ""

    def write(self, s):
        self.buf += s
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self.interp.stderr_line(line)
        return len(s)

    def flush(self):
        pass


class Interp:
    def __init__(self, script):
        self.defs = {}
        for d in script["defs"]:
            self.defs[d["name"]] = d["body"]
        self.main_body = script["main"]
        self.vars = {}
        self.addr = {}  # id(greenlet) -> name, to name greenlets in stderr messages
        self.created = []  # (name, weakref)
        self.lines = []
        self.finished = False
        self.tracers = {}  # id(tracer object) -> tid
        self.next_tid = 1

    def log(self, line):
        if not self.finished:
            self.lines.append(line)

    def stderr_line(self, line):
        prefix = "GreenletExit did not kill "
        if line.startswith(prefix):
            rest = line[len(prefix):]
            name = "?"
            for addr, n in self.addr.items():
                if (" at 0x%x " % addr) in rest:
                    name = n
            self.log("leak %s" % name)
        elif line.strip():
            self.log("stderr %s" % line)

    def unraisable(self, u):
        self.log("unraisable %s from %s" % (fmt_error(u.exc_value), name_of(u.object)))

    # -- running one script ------------------------------------------------------------------

    def run(self):
        main = greenlet.getcurrent()
        main.name = "main"
        self.vars["main"] = main
        del main
        old_trace = greenlet.settrace(None)
        old_stderr, old_hook = sys.stderr, sys.unraisablehook
        sys.stderr = StderrCatcher(self)
        sys.unraisablehook = self.unraisable
        try:
            try:
                self.exec_body("main", self.main_body)
            except CAUGHT:
                pass  # already logged as `uncaught`
            self.log("[main] end")
            for name, _ in self.created:
                if name in self.vars:
                    self.log("final %s: %s" % (name, state_of(self.vars[name])))
        except BaseException as e:  # an interpreter bug or an unexpected greenlet error
            self.lines.append("internal %s: %s" % (type(e).__name__, e))
        finally:
            self.teardown()
            sys.stderr, sys.unraisablehook = old_stderr, old_hook
            greenlet.settrace(old_trace)
        return self.lines

    def teardown(self):
        """Ends every greenlet of the script, silently: bodies see `finished` and return."""
        self.finished = True
        greenlet.settrace(None)
        for _, ref in self.created:
            g = ref()
            if g is not None and g and not g.dead and g is not greenlet.getcurrent():
                try:
                    g.throw()
                except BaseException:
                    pass
            g = None
        self.vars.clear()
        # No gc.collect() here: after the throws above every greenlet of the script is dead
        # (or leaked for good by greenlet itself), so freeing the rest later runs nothing.

    def make_run(self, name):
        def run(*args):
            if self.finished:
                return None
            value = args[0] if len(args) == 1 else UNIT
            # Normalisation N3 (README): a GreenletExit start value is written `()`.
            if isinstance(value, GreenletExit):
                value = UNIT
            self.log("[%s] start %s" % (name, fmt_value(value)))
            value = None
            return self.exec_body(name, self.defs[name])

        return run

    def new_greenlet(self, name, parent):
        g = greenlet.greenlet(self.make_run(name), parent)
        g.name = name
        self.addr[id(g)] = name
        self.created.append((name, weakref.ref(g)))
        return g

    def exec_body(self, me, steps):
        """Runs a body; returns its value or raises its error. Holds no greenlet in a local
        across a switch except the target of that switch (as the Rust interpreter does)."""
        for step in steps:
            if self.finished:
                return None
            op = step["op"]
            if op == "create":
                g, parent = step["g"], step.get("parent")
                text = "[%s] create %s" % (me, g) + ("" if parent is None else " parent=%s" % parent)
                if g in self.vars or g not in self.defs:
                    self.log(text + ": exists")
                elif parent is not None and parent not in self.vars:
                    self.log(text + ": missing")
                else:
                    self.log(text)
                    self.vars[g] = self.new_greenlet(g, None if parent is None else self.vars[parent])
            elif op in ("switch", "throw"):
                t = step["target"]
                if op == "switch":
                    text = "[%s] switch %s %s" % (me, t, fmt_script_value(step["value"]))
                else:
                    text = "[%s] throw %s %s" % (me, t, fmt_script_error(step["error"]))
                if t not in self.vars:
                    self.log(text + ": missing")
                    continue
                self.log(text)
                try:
                    if op == "switch":
                        v = py_value(step["value"])
                        if v is UNIT:
                            r = self.vars[t].switch()
                        else:
                            r = self.vars[t].switch(v)
                        v = None
                    elif step["error"] == "Exit":
                        r = self.vars[t].throw()
                    else:
                        r = self.vars[t].throw(py_error(step["error"]))
                except CAUGHT as e:
                    if self.finished:
                        return None
                    if step.get("catch", True):
                        self.log("[%s] caught %s" % (me, fmt_error(e)))
                        continue
                    self.log("[%s] uncaught %s" % (me, fmt_error(e)))
                    raise
                if self.finished:
                    return None
                self.log("[%s] got %s" % (me, fmt_value(r)))
                r = None
            elif op == "return":
                self.log("[%s] return %s" % (me, fmt_script_value(step["value"])))
                v = py_value(step["value"])
                return None if v is UNIT else v
            elif op == "raise":
                self.log("[%s] raise %s" % (me, fmt_script_error(step["error"])))
                raise py_error(step["error"])
            elif op == "panic":
                self.log("[%s] panic %s" % (me, step["tag"]))
                raise ScriptPanic(step["tag"])
            elif op == "drop":
                g = step["g"]
                if g == "main" or g not in self.vars:
                    self.log("[%s] drop %s: missing" % (me, g))
                    continue
                self.log("[%s] drop %s" % (me, g))
                self.vars.pop(g)  # the last handle may go here: the kill runs inside this call
            elif op == "reparent":
                g, p = step["g"], step["parent"]
                text = "[%s] reparent %s %s" % (me, g, p)
                if g not in self.vars or p not in self.vars:
                    self.log(text + ": missing")
                    continue
                try:
                    self.vars[g].parent = self.vars[p]
                    self.log(text + ": ok")
                except ValueError as e:
                    if "cyclic" not in str(e):
                        raise
                    self.log(text + ": cyclic")
                except AttributeError as e:
                    if "main greenlet" not in str(e):
                        raise
                    self.log(text + ": main")
            elif op == "settrace":
                spec = step["tracer"]
                if spec == "None":
                    prev = greenlet.settrace(None)
                    self.log("[%s] settrace none (prev %s)" % (me, self.tracer_name(prev)))
                else:
                    tid = self.next_tid
                    self.next_tid += 1
                    if spec == "Record":
                        tr, what = Tracer(self, tid, None, 0), "record"
                    elif "FailOn" in spec:
                        n = spec["FailOn"]
                        tr, what = Tracer(self, tid, "fail", n), "fail %d" % n
                    elif "ExitOn" in spec:
                        n = spec["ExitOn"]
                        tr, what = Tracer(self, tid, "exit", n), "exit %d" % n
                    elif "PanicOn" in spec:
                        n = spec["PanicOn"]
                        tr, what = Tracer(self, tid, "panic", n), "panic %d" % n
                    else:
                        sw = spec["SwitchOn"]
                        tr = Tracer(self, tid, "switch", sw["n"], sw["target"], sw["value"])
                        what = "switch %d %s %s" % (sw["n"], sw["target"], fmt_script_value(sw["value"]))
                    self.tracers[id(tr)] = tid
                    prev = greenlet.settrace(tr)
                    tr = None
                    self.log("[%s] settrace t%d %s (prev %s)" % (me, tid, what, self.tracer_name(prev)))
                prev = None
            elif op == "gettrace":
                self.log("[%s] gettrace %s" % (me, self.tracer_name(greenlet.gettrace())))
            elif op == "print":
                self.log("[%s] print %s" % (me, step["text"]))
            elif op == "state":
                g = step["g"]
                if g not in self.vars:
                    self.log("[%s] state %s: missing" % (me, g))
                    continue
                self.log(
                    "[%s] state %s: %s parent=%s"
                    % (me, g, state_of(self.vars[g]), name_of(self.vars[g].parent))
                )
            else:
                raise ScriptSyntaxError("unknown op %r" % op)
        self.log("[%s] return ()" % me)
        return None

    def tracer_name(self, tr):
        if tr is None:
            return "none"
        return "t%d" % self.tracers.get(id(tr), 0)


def run_script(script):
    return Interp(script).run()


# ---------------------------------------------------------------------------------------------
# The text form (see README): a parser, so regression files can be run here directly.


def parse_value(tok):
    if tok == "()":
        return "Unit"
    if tok == "<exit>":
        return "Exit"
    if tok.startswith('"'):
        return {"Str": json.loads(tok)}
    try:
        return {"Int": int(tok)}
    except ValueError:
        raise ScriptSyntaxError("bad value %r" % tok)


def parse_error(tok):
    if tok == "exit":
        return "Exit"
    if tok.startswith("error(") and tok.endswith(")"):
        return {"User": tok[6:-1]}
    raise ScriptSyntaxError("bad error %r" % tok)


def tokenize(line):
    toks, i = [], 0
    while i < len(line):
        c = line[i]
        if c.isspace():
            i += 1
        elif c == '"':
            j = i + 1
            while j < len(line) and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            toks.append(line[i : j + 1])
            i = j + 1
        else:
            j = i
            while j < len(line) and not line[j].isspace():
                j += 1
            toks.append(line[i:j])
            i = j
    return toks


def parse_step(line):
    if line.startswith("print "):
        return {"op": "print", "text": line[6:]}
    toks = tokenize(line)
    op, args = toks[0], toks[1:]
    catch = True
    if args and args[-1] == "?":
        catch = False
        args = args[:-1]

    def need(n):
        if len(args) != n:
            raise ScriptSyntaxError("%s takes %d operands: %r" % (op, n, line))

    if op == "create":
        if len(args) == 2 and args[1].startswith("parent="):
            return {"op": "create", "g": args[0], "parent": args[1][7:]}
        need(1)
        return {"op": "create", "g": args[0], "parent": None}
    if op == "switch":
        need(2)
        return {"op": "switch", "target": args[0], "value": parse_value(args[1]), "catch": catch}
    if op == "throw":
        need(2)
        return {"op": "throw", "target": args[0], "error": parse_error(args[1]), "catch": catch}
    if op == "return":
        need(1)
        return {"op": "return", "value": parse_value(args[0])}
    if op == "raise":
        need(1)
        return {"op": "raise", "error": parse_error(args[0])}
    if op == "panic":
        need(1)
        return {"op": "panic", "tag": args[0]}
    if op in ("drop", "state"):
        need(1)
        return {"op": op, "g": args[0]}
    if op == "reparent":
        need(2)
        return {"op": "reparent", "g": args[0], "parent": args[1]}
    if op == "settrace":
        if args == ["none"]:
            return {"op": "settrace", "tracer": "None"}
        if args == ["record"]:
            return {"op": "settrace", "tracer": "Record"}
        if len(args) == 2 and args[0] == "fail":
            return {"op": "settrace", "tracer": {"FailOn": int(args[1])}}
        if len(args) == 2 and args[0] == "exit":
            return {"op": "settrace", "tracer": {"ExitOn": int(args[1])}}
        if len(args) == 2 and args[0] == "panic":
            return {"op": "settrace", "tracer": {"PanicOn": int(args[1])}}
        if len(args) == 4 and args[0] == "switch":
            sw = {"n": int(args[1]), "target": args[2], "value": parse_value(args[3])}
            return {"op": "settrace", "tracer": {"SwitchOn": sw}}
        raise ScriptSyntaxError("bad settrace %r" % line)
    if op == "gettrace":
        need(0)
        return {"op": "gettrace"}
    raise ScriptSyntaxError("unknown step %r" % line)


def parse_text(text):
    script = {"defs": [], "main": []}
    body = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0] if not raw.lstrip().startswith("print ") else raw
        if not line.strip():
            continue
        try:
            if not line[0].isspace():
                head = line.strip()
                if head == "main:":
                    body = script["main"]
                elif head.startswith("def ") and head.endswith(":"):
                    body = []
                    script["defs"].append({"name": head[4:-1].strip(), "body": body})
                else:
                    raise ScriptSyntaxError("expected `main:` or `def NAME:`")
            elif body is None:
                raise ScriptSyntaxError("step outside a body")
            else:
                body.append(parse_step(line.strip()))
        except (ScriptSyntaxError, ValueError, IndexError) as e:
            raise ScriptSyntaxError("line %d: %s" % (lineno, e))
    return script


def load(path):
    with open(path) as f:
        text = f.read()
    if text.lstrip().startswith("{"):
        return json.loads(text)
    return parse_text(text)


def server():
    gc.disable()  # no collection in the middle of a script: refcounting alone, as in Rust
    for n, line in enumerate(sys.stdin):
        if not line.strip():
            continue
        if n % 500 == 499:
            gc.collect()
        try:
            out = run_script(json.loads(line))
        except Exception as e:
            out = ["internal %s: %s" % (type(e).__name__, e)]
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


def main(argv):
    if argv == ["--server"]:
        server()
        return 0
    try:
        if len(argv) == 2 and argv[0] == "--to-json":
            print(json.dumps(load(argv[1])))
            return 0
        if len(argv) != 1 or argv[0].startswith("-"):
            sys.stderr.write("usage: interp.py FILE | --server | --to-json FILE\n")
            return 2
        script = load(argv[0])
    except (OSError, ValueError, ScriptSyntaxError) as e:
        sys.stderr.write("interp.py: %s\n" % e)
        return 2
    gc.disable()
    for line in run_script(script):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
