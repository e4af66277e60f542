//! Issue 18: `gltop --sample` on unmodified Python greenlet processes, with real CPython and
//! real BPF. The workload (`tests/python/split.py`) measures its own CPU split between two
//! greenlets on one thread, and runs a third greenlet on a second thread; gltop's samples
//! must agree. Python processes gltop cannot sample are refused in one line, exit 2.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// The greenlet version the tests install and expect (as `.ci/deps.sh`).
const GREENLET: &str = "3.5.6";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/split.py")
}

/// The interpreter that `python3` on PATH runs (resolving shims), if it imports greenlet.
fn python3_with_greenlet() -> Result<PathBuf, String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, greenlet; print(sys.executable); print(greenlet.__version__)",
        ])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "python3 cannot import greenlet (make deps installs it): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let exe = PathBuf::from(lines.next().unwrap_or_default());
    let version = lines.next().unwrap_or_default();
    if !version.starts_with("3.") {
        return Err(format!("python3 has greenlet {version}, not 3.x"));
    }
    Ok(exe)
}

/// A second CPython minor version (3.13 from pyenv) with greenlet, in a venv made once under
/// the target directory. `Err`: why there is none here (pyenv's 3.13 is absent, or pip could
/// not install greenlet).
fn python313_with_greenlet() -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME").ok_or("no HOME")?;
    let versions = PathBuf::from(home).join(".pyenv/versions");
    let base = std::fs::read_dir(&versions)
        .map_err(|e| format!("no pyenv here ({}: {e})", versions.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("3.13"))
        })
        .map(|p| p.join("bin/python3"))
        .find(|p| p.exists())
        .ok_or_else(|| format!("pyenv has no CPython 3.13 in {}", versions.display()))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let target = exe.ancestors().nth(3).ok_or("no target directory")?;
    let venv = target.join("pysample-venv-3.13");
    let python = venv.join("bin/python");
    let has = |p: &Path| {
        Command::new(p)
            .args([
                "-c",
                &format!("import greenlet, sys; sys.exit(greenlet.__version__ != '{GREENLET}')"),
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&python) {
        let ok = Command::new(&base)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    &format!("greenlet=={GREENLET}"),
                ])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !ok || !has(&python) {
            return Err(format!(
                "cannot make a venv with greenlet {GREENLET} from {}",
                base.display()
            ));
        }
    }
    Ok(python)
}

/// Runs split.py under `python` (with `env`) and `gltop --sample --hz 999` on it, from before
/// the split starts to its end. Returns the workload's report and gltop's last JSON line.
fn run_split(python: &Path, env: &[(&str, &str)]) -> (Value, Value) {
    let go = std::env::temp_dir().join(format!(
        "gltop-pysample-{}-{}",
        std::process::id(),
        python.display().to_string().len()
    ));
    let _ = std::fs::remove_file(&go);
    let mut w = Proc::spawn(
        Command::new(python)
            .arg(script())
            .args(["--seconds", "5", "--wait-for-file"])
            .arg(&go)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(
        w.wait_stderr("waiting for", Duration::from_secs(60)),
        "split.py: {}",
        w.stderr_so_far()
    );
    let mut g = Proc::spawn(
        gltop()
            .args(["-p", &w.pid().to_string()])
            .args([
                "--json",
                "--sample",
                "--hz",
                "999",
                "-d",
                "1",
                "--hit-cost-ns",
                "500",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(
        g.wait_stderr("attached to process", Duration::from_secs(60)),
        "gltop: {}",
        g.stderr_so_far()
    );
    std::fs::write(&go, b"").expect("create the go file");
    let st = w.wait("split.py", TIMEOUT);
    let _ = std::fs::remove_file(&go);
    assert!(st.success(), "split.py: {}", w.stderr_text());
    let gst = g.wait("gltop", Duration::from_secs(60));
    let err = g.stderr_text();
    assert!(gst.success() && err.contains("exited"), "gltop: {err}");
    let report: Value = serde_json::from_str(w.stdout_text().trim()).expect("split.py's report");
    let lines = json_lines(&g.stdout_text());
    (report, lines.last().expect("a JSON line").clone())
}

/// gltop's samples of greenlet `id` on thread `tid` (0 if it has none), checking its type.
fn samples_of(line: &Value, tid: &Value, id: &Value, type_name: &Value) -> u64 {
    let rows: Vec<&Value> = line["greenlets"]
        .as_array()
        .expect("greenlets")
        .iter()
        .filter(|g| g["id"] == *id && g["tid"] == *tid)
        .collect();
    assert!(rows.len() <= 1, "one row per (thread, greenlet): {rows:#?}");
    rows.first().map_or(0, |g| {
        assert_eq!(g["name"], *type_name, "the type read at sample time: {g}");
        g["samples"].as_u64().expect("samples")
    })
}

/// Checks one run; returns (gltop's heavy share, the workload's).
fn check_split(who: &str, report: &Value, line: &Value) -> (f64, f64) {
    assert_eq!(line["mode"], "sample", "{who}");
    assert_eq!(line["runtime"], "python-greenlet", "{who}");
    assert!(
        line["attach"]["python"]["module_id"]
            .as_u64()
            .is_some_and(|m| m > 0),
        "{who}: the module id was found: {}",
        line["attach"]
    );
    let gs = report["greenlets"]
        .as_array()
        .expect("the report's greenlets");
    let n = |g: &Value| samples_of(line, &g["tid"], &g["id"], &g["type"]);
    let (heavy, light, worker) = (n(&gs[0]), n(&gs[1]), n(&gs[2]));
    let share = 100.0 * heavy as f64 / (heavy + light).max(1) as f64;
    let measured = report["heavy_pct"].as_f64().expect("heavy_pct");
    let rate = report["switches_per_cpu_s"]
        .as_f64()
        .expect("a switch rate");
    eprintln!(
        "{who}: heavy {heavy} light {light} samples: {share:.1}% (measured {measured:.1}%), \
         {rate:.0} switches per CPU second ({:.0} per second); worker {worker} samples on its thread",
        report["switches_per_s"].as_f64().unwrap_or(0.0)
    );
    assert!(
        rate >= 10_000.0,
        "{who}: the workload switched too slowly: {report}"
    );
    assert!(heavy + light >= 500, "{who}: too few samples: {line}");
    assert!(
        (share - 70.0).abs() <= 3.0,
        "{who}: heavy {share:.1}%, not 70 ± 3"
    );
    assert!(
        ((100.0 - share) - 30.0).abs() <= 3.0,
        "{who}: light {:.1}%, not 30 ± 3",
        100.0 - share
    );
    assert!(
        (share - measured).abs() <= 3.0,
        "{who}: heavy {share:.1}% against {measured:.1}% measured by the workload"
    );
    // Main-ness, read at sample time: heavy is not its thread's main greenlet; one greenlet
    // of that thread is (the one that started heavy).
    let rows = line["greenlets"].as_array().unwrap();
    let heavy_row = rows
        .iter()
        .find(|g| g["id"] == gs[0]["id"] && g["tid"] == gs[0]["tid"])
        .expect("heavy's row");
    assert_eq!(heavy_row["main"], false, "{who}: {heavy_row}");
    assert!(
        rows.iter()
            .any(|g| g["tid"] == gs[0]["tid"] && g["main"] == true),
        "{who}: no main greenlet on the first thread: {line}"
    );
    // Its off-CPU time while asleep, from sched_switch, against the wall time of its sleeps.
    let row = line["greenlets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == gs[2]["id"] && g["tid"] == gs[2]["tid"])
        .expect("the worker's row");
    let asleep = row["offcpu_sleeping_ns"].as_f64().expect("off-CPU time");
    let slept = gs[2]["sleep_ns"].as_f64().expect("sleep_ns");
    eprintln!(
        "{who}: worker asleep {:.3} s by sched_switch, {:.3} s measured",
        asleep / 1e9,
        slept / 1e9
    );
    assert!(
        (asleep - slept).abs() <= 0.1 * slept,
        "{who}: worker asleep {asleep} ns, measured {slept} ns"
    );
    // The second thread's greenlet: sampled there, and only there.
    assert!(
        worker > 0,
        "{who}: the worker greenlet got no samples: {line}"
    );
    assert_eq!(
        samples_of(line, &gs[0]["tid"], &gs[2]["id"], &gs[2]["type"]),
        0,
        "{who}: the worker attributed to the first thread"
    );
    (share, measured)
}

#[test]
fn a_70_30_split_reads_70_30_and_a_second_thread_keeps_its_greenlet() {
    let what = "a_70_30_split_reads_70_30_and_a_second_thread_keeps_its_greenlet";
    if !bpf_or_skip(what) {
        return;
    }
    let python = python3_with_greenlet();
    if !require(what, python.as_ref().map(drop).map_err(Clone::clone)) {
        return;
    }
    let _serial = serial();
    let python = python.expect("checked");
    let (report, line) = run_split(&python, &[]);
    check_split(
        &format!("CPython {}", report["python"].as_str().unwrap_or("?")),
        &report,
        &line,
    );

    // An older greenlet 3 (another build of the module: other addresses, same layout), where
    // this machine keeps one.
    let g303 = greenlet_version_dir("3.0.3");
    if require("greenlet 3.0.3", greenlet_version_installed("3.0.3")) {
        let path = g303.display().to_string();
        let (report, line) = run_split(&python, &[("PYTHONPATH", &path)]);
        assert_eq!(report["greenlet"], "3.0.3");
        assert_eq!(line["attach"]["python"]["greenlet_version"], "3.0.3");
        check_split("greenlet 3.0.3", &report, &line);
    } else {
        eprintln!(
            "skipping the greenlet 3.0.3 run: none in {}",
            g303.display()
        );
    }

    // A second minor version, where this machine has one (pyenv is not on every CI image).
    match python313_with_greenlet() {
        Ok(p313) => {
            let (report, line) = run_split(&p313, &[]);
            assert_eq!(report["python"], "3.13");
            check_split("CPython 3.13", &report, &line);
        }
        Err(why) => eprintln!("skipping the CPython 3.13 run: {why}"),
    }
}

/// `gltop -p PID --sample --json -n 1` on a Python started with `code` (and `env`): its exit
/// code and stderr.
fn refused(code: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let python = python3_with_greenlet().expect("checked by the caller");
    let p = Proc::spawn(
        Command::new(python)
            .args(["-c", code])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    assert!(
        p.wait_stderr("ready", Duration::from_secs(60)),
        "python: {}",
        p.stderr_so_far()
    );
    let out = gltop()
        .args(["-p", &p.pid().to_string(), "--sample", "--json", "-n", "1"])
        .output()
        .expect("run gltop");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `gltop record -p PID -d 1` on a Python started with `code`: its exit code and stderr.
fn refused_record(code: &str) -> (Option<i32>, String) {
    let python = python3_with_greenlet().expect("checked by the caller");
    let p = Proc::spawn(
        Command::new(python)
            .args(["-c", code])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    assert!(
        p.wait_stderr("ready", Duration::from_secs(60)),
        "python: {}",
        p.stderr_so_far()
    );
    let folded = std::env::temp_dir().join(format!("gltop-pyrefused-{}", std::process::id()));
    let out = gltop()
        .args(["record", "-p", &p.pid().to_string(), "-d", "1", "--folded"])
        .arg(&folded)
        .output()
        .expect("run gltop record");
    let _ = std::fs::remove_file(&folded);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn python_processes_that_cannot_be_sampled_are_refused_in_one_line() {
    let what = "python_processes_that_cannot_be_sampled_are_refused_in_one_line";
    if !bpf_or_skip(what) {
        return;
    }
    if !require(what, python3_with_greenlet().map(drop)) {
        return;
    }
    let _serial = serial();
    let wait = "import sys, time; print('ready', file=sys.stderr, flush=True); time.sleep(60)";
    let (code, err) = refused(wait, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("Python process without greenlet"), "{err}");
    let (code, err) = refused_record(wait);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("Python process without greenlet"), "{err}");

    // greenlet 1.x keeps no thread-local state: too old, and the message says what works.
    let old = greenlet_version_dir("1.1.3");
    if require("greenlet 1.1.3", greenlet_version_installed("1.1.3")) {
        let code_old = format!(
            "import greenlet; assert greenlet.__version__ == '1.1.3'; greenlet.greenlet(lambda: 0).switch(); {wait}"
        );
        let path = old.display().to_string();
        let (code, err) = refused(&code_old, &[("PYTHONPATH", &path)]);
        assert_eq!(code, Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("greenlet 1.1.3") && err.contains("too old") && err.contains("3.x"),
            "{err}"
        );
    } else {
        eprintln!(
            "skipping the greenlet 1.x refusal: no greenlet 1.1.3 in {}",
            old.display()
        );
    }
}

/// `gltop record -d 3 --hz 999` on split.py under `python`: the workload's report, gltop's
/// stderr and the folded lines as (frames, count).
fn record_split(python: &Path) -> (Value, String, Vec<(Vec<String>, u64)>, String) {
    let dir = std::env::temp_dir().join(format!("gltop-pyrecord-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let go = dir.join("go");
    let (folded, svg) = (dir.join("out.folded"), dir.join("out.svg"));
    let _ = std::fs::remove_file(&go);
    let mut w = Proc::spawn(
        Command::new(python)
            .arg(script())
            .args(["--seconds", "6", "--wait-for-file"])
            .arg(&go)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(
        w.wait_stderr("waiting for", Duration::from_secs(60)),
        "split.py: {}",
        w.stderr_so_far()
    );
    std::fs::write(&go, b"").expect("create the go file");
    let out = gltop()
        .args([
            "record",
            "-p",
            &w.pid().to_string(),
            "-d",
            "3",
            "--hz",
            "999",
        ])
        .arg("--folded")
        .arg(&folded)
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("run gltop record");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "gltop record: {err}");
    assert!(
        err.contains("each named by its Python type) written to"),
        "the summary line: {err}"
    );
    let st = w.wait("split.py", TIMEOUT);
    assert!(st.success(), "split.py: {}", w.stderr_text());
    let report: Value = serde_json::from_str(w.stdout_text().trim()).expect("split.py's report");
    let text = std::fs::read_to_string(&folded).expect("the folded file");
    let lines = text
        .lines()
        .map(|l| {
            let (frames, count) = l.rsplit_once(' ').expect("FRAMES COUNT");
            (
                frames.split(';').map(str::to_string).collect(),
                count.parse().expect("a count"),
            )
        })
        .collect();
    let svg = std::fs::read_to_string(&svg).expect("the SVG");
    let _ = std::fs::remove_dir_all(&dir);
    (report, err, lines, svg)
}

/// Each greenlet's stacks end at its own run function, and its hot leaf is `work`.
fn check_stacks(who: &str, report: &Value, lines: &[(Vec<String>, u64)], svg: &str) {
    let runs = [
        ("heavy", "heavy_run"),
        ("light", "light_run"),
        ("worker", "worker_run"),
    ];
    for (g, (name, run)) in report["greenlets"].as_array().unwrap().iter().zip(runs) {
        assert_eq!(g["name"], name);
        let first = format!(
            "{}#{}",
            g["type"].as_str().unwrap(),
            g["id"].as_u64().unwrap()
        );
        let mine: Vec<&(Vec<String>, u64)> = lines.iter().filter(|(f, _)| f[0] == first).collect();
        let total: u64 = mine.iter().map(|(_, n)| n).sum();
        assert!(total > 0, "{who}: no stacks of {first}: {lines:?}");
        // A sample that lands inside a switch, between greenlet's update of the current
        // greenlet and CPython's of the frame chain, pairs one greenlet with its peer's
        // stack: a window of a few hundred ns per switch, so a few samples in a thousand.
        let foreign: u64 = mine
            .iter()
            .filter(|(f, _)| !f.get(1).is_some_and(|b| b.ends_with(run)))
            .map(|(_, n)| n)
            .sum();
        eprintln!("{who}: {name}: {foreign} of {total} samples on a stack not ending at {run}");
        assert!(
            foreign * 100 <= total * 2,
            "{who}: {foreign} of {name}'s {total} samples do not end at {run}: {mine:?}"
        );
        for (frames, _) in &mine {
            assert!(
                !frames
                    .iter()
                    .any(|f| f == "<module>" || f.ends_with(".main") || f == "main"),
                "{who}: a frame of the main greenlet under {name}: {frames:?}"
            );
        }
        let (hot, n) = mine.iter().max_by_key(|(_, n)| *n).expect("a stack");
        assert_eq!(
            hot.last().map(String::as_str),
            Some("work"),
            "{who}: {name}'s hot leaf"
        );
        eprintln!(
            "{who}: {name}: {total} samples, hottest {} ({n})",
            hot.join(";")
        );
        assert!(svg.contains(run), "{who}: {run} not in the SVG");
    }
}

/// Without frame offsets: one line per greenlet, `TYPE#ADDR COUNT`, heavy's about 70%.
fn check_flat(who: &str, report: &Value, lines: &[(Vec<String>, u64)]) {
    let gs = report["greenlets"].as_array().unwrap();
    let count = |g: &Value| {
        let first = format!(
            "{}#{}",
            g["type"].as_str().unwrap(),
            g["id"].as_u64().unwrap()
        );
        let mine: Vec<&(Vec<String>, u64)> = lines.iter().filter(|(f, _)| f[0] == first).collect();
        assert_eq!(mine.len(), 1, "{who}: one line of {first}: {lines:?}");
        assert_eq!(mine[0].0.len(), 1, "{who}: no frames: {:?}", mine[0]);
        mine[0].1
    };
    let (heavy, light, worker) = (count(&gs[0]), count(&gs[1]), count(&gs[2]));
    let share = 100.0 * heavy as f64 / (heavy + light) as f64;
    assert!((share - 70.0).abs() <= 3.0, "{who}: heavy {share:.1}%");
    assert!(worker > 0, "{who}");
}

#[test]
fn record_gives_each_python_greenlet_its_own_stacks() {
    let what = "record_gives_each_python_greenlet_its_own_stacks";
    if !bpf_or_skip(what) {
        return;
    }
    let python = python3_with_greenlet();
    if !require(what, python.as_ref().map(drop).map_err(Clone::clone)) {
        return;
    }
    let _serial = serial();
    let (report, err, lines, svg) = record_split(&python.expect("checked"));
    // Before 3.13 the offsets come from libpython's DWARF, which a distribution's Python
    // lacks (Debian's python3.11 is stripped): then gltop says so in one line and records each
    // greenlet's samples alone, which is checked instead.
    let who = format!("CPython {}", report["python"].as_str().unwrap_or("?"));
    if err.contains("no Python stacks") {
        eprintln!("{who} has no readable frame offsets here; checking the per-greenlet fallback");
        assert!(err.contains("DWARF"), "{who}: why: {err}");
        check_flat(&who, &report, &lines);
    } else {
        check_stacks(&who, &report, &lines, &svg);
    }
    match python313_with_greenlet() {
        Ok(p313) => {
            let (report, err, lines, svg) = record_split(&p313);
            assert!(err.contains("_Py_DebugOffsets"), "{err}");
            check_stacks("CPython 3.13", &report, &lines, &svg);
        }
        Err(why) => eprintln!("skipping the CPython 3.13 recording: {why}"),
    }
}

#[test]
fn the_live_view_shows_python_greenlets_by_type() {
    use support::tmux::{bpf_and_tmux_or_skip, Tmux};
    let what = "the_live_view_shows_python_greenlets_by_type";
    if !bpf_and_tmux_or_skip(what) {
        return;
    }
    let python = python3_with_greenlet();
    if !require(what, python.as_ref().map(drop).map_err(Clone::clone)) {
        return;
    }
    let _serial = serial();
    let go = std::env::temp_dir().join(format!("gltop-pysample-tui-{}", std::process::id()));
    std::fs::write(&go, b"").expect("create the go file");
    let mut w = Proc::spawn(
        Command::new(python.expect("checked"))
            .arg(script())
            .args(["--seconds", "30", "--wait-for-file"])
            .arg(&go)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    // Said once greenlet is imported (the go file is there already: it starts at once).
    assert!(
        w.wait_stderr("waiting for", Duration::from_secs(60)),
        "split.py: {}",
        w.stderr_so_far()
    );
    let _ = std::fs::remove_file(&go);
    let pid = w.pid();
    let cmd = format!(
        "{} -p {pid} --sample --hz 999 -d 0.5 --hit-cost-ns 8000; echo GLTOP_EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_gltop")
    );
    let tmux = Tmux::start("pysample", &cmd);
    let long = Duration::from_secs(30);
    let screen = tmux.wait_for("the Python greenlets", long, |s| {
        s.contains(&format!("pid {pid} (python")) && s.contains("Worker") && {
            s.lines()
                .filter(|l| l.contains("greenlet.greenlet"))
                .count()
                >= 2
        }
    });
    assert!(screen.contains("Python greenlet (no probe)"), "{screen}");
    assert!(
        screen.contains("switches - (greenlet counts none)"),
        "{screen}"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("gltop's exit", long, |s| s.contains("GLTOP_EXIT=0"));
    w.kill();
}

/// Whether `python` imports gevent.
fn gevent_in(python: &Path) -> Result<(), String> {
    let st = Command::new(python)
        .args(["-c", "import gevent"])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if st.success() {
        Ok(())
    } else {
        Err(format!(
            "{} cannot import gevent (make deps installs it)",
            python.display()
        ))
    }
}

#[test]
fn record_on_gevent_keeps_spawned_functions_out_of_the_hub() {
    let what = "record_on_gevent_keeps_spawned_functions_out_of_the_hub";
    if !bpf_or_skip(what) {
        return;
    }
    let python = python3_with_greenlet();
    let check = python.clone().and_then(|p| gevent_in(&p));
    if !require(what, check) {
        return;
    }
    let _serial = serial();
    let python = python.expect("checked");
    let dir = std::env::temp_dir().join(format!("gltop-pygevent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let (go, folded) = (dir.join("go"), dir.join("out.folded"));
    let mut w = Proc::spawn(
        Command::new(&python)
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/gevent_spawn.py"))
            .args(["--seconds", "5", "--wait-for-file"])
            .arg(&go)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(
        w.wait_stderr("waiting for", Duration::from_secs(60)),
        "gevent_spawn.py: {}",
        w.stderr_so_far()
    );
    std::fs::write(&go, b"").expect("create the go file");
    let out = gltop()
        .args([
            "record",
            "-p",
            &w.pid().to_string(),
            "-d",
            "3",
            "--hz",
            "999",
        ])
        .arg("--folded")
        .arg(&folded)
        .output()
        .expect("run gltop record");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "gltop record: {err}");
    assert!(w.wait("gevent_spawn.py", TIMEOUT).success());
    let report: Value = serde_json::from_str(w.stdout_text().trim()).expect("the report");
    let text = std::fs::read_to_string(&folded).expect("the folded file");
    let _ = std::fs::remove_dir_all(&dir);
    let stacks = !err.contains("no Python stacks");
    if !stacks {
        // A Python whose frames cannot be read here (see the stacks test): one line per
        // greenlet, checked below with the bottom frame left out.
        eprintln!("no Python stacks here, checking the greenlets alone: {err}");
    }
    let mut totals = Vec::new();
    for name in ["fetcher", "parser"] {
        let g = &report[name];
        assert_eq!(g["type"], "gevent._gevent_cgreenlet.Greenlet");
        let first = format!("{}#{}", g["type"].as_str().unwrap(), g["id"]);
        let mut total = 0u64;
        let mut own = 0u64;
        let mine =
            |l: &&str| l.starts_with(&format!("{first};")) || l.starts_with(&format!("{first} "));
        for l in text.lines().filter(mine) {
            let (frames, n) = l.rsplit_once(' ').expect("FRAMES COUNT");
            let n: u64 = n.parse().expect("a count");
            total += n;
            if !stacks || frames.split(';').nth(1) == Some(name) {
                own += n;
            }
        }
        eprintln!("gevent: {name}: {own} of {total} samples in stacks from {name}");
        assert!(total > 0, "no stacks of {name}: {text}");
        assert!(
            own * 100 >= total * 95,
            "{name}'s flame is not its own: {text}"
        );
        totals.push(own);
    }
    assert!(
        totals[0] > 2 * totals[1],
        "fetcher does three times parser's work: {totals:?}"
    );
    // Under the hub: at most the samples that land inside a switch (see the stacks test).
    let hub = format!("Hub#{};", report["hub"]["id"]);
    let under_hub: u64 = text
        .lines()
        .filter(|l| l.starts_with(&hub) && (l.contains(";fetcher") || l.contains(";parser")))
        .map(|l| {
            l.rsplit_once(' ')
                .map_or(0, |(_, n)| n.parse().unwrap_or(0))
        })
        .sum();
    eprintln!("gevent: {under_hub} samples of the hub on a spawned function's stack");
    assert!(
        under_hub * 100 <= (totals[0] + totals[1]) * 2,
        "spawned functions under the hub: {text}"
    );
}
