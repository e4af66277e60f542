//! Misuse of every binary the project ships or documents (issue 6, item 4): `gltop`, and the
//! examples with a command line, `workload`, `demo`, `million` and `switch_loop`. Each misuse
//! must give exactly one line on stderr (`NAME: what is wrong`), exit code 2, nothing on
//! stdout, and never a panic or a backtrace (the binaries run with `RUST_BACKTRACE=1`, so a
//! panic would show one). Every table runs to the end and reports all its failures at once.
//!
//! (`examples/tracing.rs` and `gltop/examples/gltop_cost.rs` take no arguments.)

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// How long a refused command may take: a misuse is refused at once, so a binary that is
/// still running after this has accepted it.
const REFUSE_WITHIN: Duration = Duration::from_secs(60);

/// One misuse: what it is, the arguments, and words the error line must contain.
struct Misuse {
    case: String,
    args: Vec<String>,
    expect: String,
}

/// A table row: (case, arguments, words of the error line). [`misuses`] puts `base` before
/// the arguments and replaces `{pid}` with the PID of this test process (alive, without
/// greenlet probes).
type Row<'a> = (&'a str, &'a [&'a str], &'a str);

fn misuses(base: &[&str], rows: &[Row]) -> Vec<Misuse> {
    let pid = std::process::id().to_string();
    rows.iter()
        .map(|(case, args, expect)| Misuse {
            case: case.to_string(),
            args: base
                .iter()
                .chain(args.iter())
                .map(|a| a.replace("{pid}", &pid))
                .collect(),
            expect: expect.to_string(),
        })
        .collect()
}

/// What every clap command line must refuse: an unknown flag, a stray argument, an option
/// without its value (`option`), a flag given twice (`flag`). `base` makes the rest valid.
fn clap_misuses(base: &[&str], option: &str, flag: &str) -> Vec<Misuse> {
    let no_value_says = format!("a value is required for '{option}");
    let twice_says = format!("the argument '{flag}' cannot be used multiple times");
    misuses(
        base,
        &[
            (
                "unknown flag",
                &["--frobnicate"],
                "unexpected argument '--frobnicate' found",
            ),
            (
                "stray argument",
                &["extra"],
                "unexpected argument 'extra' found",
            ),
            ("option without its value", &[option], &no_value_says),
            ("flag given twice", &[flag, flag], &twice_says),
        ],
    )
}

/// Runs `wrap... bin args...` and checks the rules; the problems found, if any.
fn check(name: &str, bin: &PathBuf, wrap: &[&str], m: &Misuse) -> Result<(), String> {
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(&m.args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("GLTOP_DEBUG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = Proc::spawn(&mut cmd);
    let Some(status) = p.wait_for(REFUSE_WITHIN) else {
        return Err(format!(
            "{name} {:?} ({}): still running after {REFUSE_WITHIN:?}",
            m.args, m.case
        ));
    };
    let (out, err) = (p.stdout_text(), p.stderr_text());
    let mut wrong = Vec::new();
    if status.code() != Some(2) {
        wrong.push(format!("exit status {status}, not 2"));
    }
    if !out.is_empty() {
        wrong.push(format!("stdout is not empty: {out:?}"));
    }
    if err.lines().count() != 1 || !err.ends_with('\n') {
        wrong.push("stderr is not exactly one line".into());
    }
    if !err.starts_with(&format!("{name}: ")) {
        wrong.push(format!("stderr does not start with {name:?}"));
    }
    let lower = err.to_lowercase();
    if lower.contains("panicked") || lower.contains("backtrace") {
        wrong.push("a panic or a backtrace".into());
    }
    if !lower.contains(&m.expect.to_lowercase()) {
        wrong.push(format!("stderr does not say {:?}", m.expect));
    }
    match wrong.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "{name} {:?} ({}): {}; stderr: {err:?}",
            m.args,
            m.case,
            wrong.join(", ")
        )),
    }
}

/// Checks every row; panics with every failure.
fn check_all(name: &str, bin: &PathBuf, wrap: &[&str], rows: &[Misuse]) {
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|m| check(name, bin, wrap, m).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} misuses of {name} broke the rules:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

fn gltop_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gltop"))
}

#[test]
fn gltop_flags() {
    // A live PID where one is needed: the flag is what is wrong. No BPF is needed: flags are
    // checked first.
    const INTERVAL: &str = "between 0.05 and 3600 seconds";
    const COUNT: &str = "a count is a positive integer";
    const CAPACITY: &str = "a capacity is an integer in 1..=4194304";
    const MAX_DEAD: &str = "a number of dead greenlets is an integer in 0..=4194304";
    const COST: &str = "a cost is a non-negative number of nanoseconds";
    const PID: &str = "a PID is a positive integer";
    const LISTEN: &str = "an address to listen on is IP:PORT or a port (loopback)";
    const NAMES: &str = "a number of greenlet names is an integer in 1..=100";
    const HZ: &str = "a sampling frequency is an integer in 1..=10000";
    const BLOCK: &str = "a blocking threshold is an integer number of milliseconds in 1..=3600000";
    let mut rows = clap_misuses(&["-p", "{pid}"], "--delay", "--json");
    rows.extend(misuses(
        &[],
        &[
            (
                "no arguments",
                &[],
                "required arguments were not provided: --pid <PID>",
            ),
            (
                "PID flag without value",
                &["-p"],
                "a value is required for '--pid <PID>'",
            ),
            (
                "empty PID",
                &["--pid="],
                "invalid value '' for '--pid <PID>': a PID is",
            ),
            (
                "non-numeric PID",
                &["-p", "abc"],
                "'abc' for '--pid <PID>': a PID is",
            ),
            ("fractional PID", &["-p", "1.5"], PID),
            ("hex PID", &["-p", "0x10"], PID),
            ("PID with a space", &["-p", " 5"], PID),
            ("PID 0", &["-p", "0"], PID),
            ("PID -1", &["-p", "-1"], PID),
            ("PID beyond i32", &["-p", "99999999999"], PID),
            (
                "PID given twice",
                &["-p", "{pid}", "-p", "{pid}"],
                "is given twice",
            ),
            (
                "PID given twice in one list",
                &["--listen", "127.0.0.1:0", "-p", "{pid},{pid}"],
                "is given twice",
            ),
            (
                "several PIDs in the live view without a terminal",
                &["-p", "{pid},1"],
                "the live view needs a terminal on stdout",
            ),
            (
                "--exe of a directory",
                &["--exe", "/tmp", "--listen", "0"],
                "gltop: --exe /tmp: not an executable file",
            ),
            (
                "--exe of a file without execute permission",
                &["--exe", "/etc/passwd", "--json"],
                "gltop: --exe /etc/passwd: not an executable file",
            ),
            (
                "--exe of a missing file",
                &["--exe", "/nonexistent/gltop-exe", "--json"],
                "gltop: --exe /nonexistent/gltop-exe: no such file",
            ),
            (
                "--exe in the live view without a terminal",
                &["--exe", "/bin/true"],
                "the live view needs a terminal on stdout",
            ),
            (
                "--exe with --follow",
                &["--exe", "/bin/true", "--json", "--follow"],
                "'--exe <PATH>' cannot be used with '--follow'",
            ),
            (
                "--exe with --sample",
                &["--exe", "/bin/true", "--json", "--sample"],
                "'--exe <PATH>' cannot be used with '--sample'",
            ),
            (
                "--exe without its path",
                &["--listen", "0", "--exe"],
                "a value is required for '--exe <PATH>'",
            ),
            (
                "--children without -p",
                &["--json", "--children"],
                "required arguments were not provided",
            ),
            (
                "--children with --sample",
                &["--json", "--children", "-p", "{pid}", "--sample"],
                "'--children' cannot be used with '--sample'",
            ),
            (
                "--children with --print-bpftrace",
                &["--print-bpftrace", "--children", "-p", "{pid}"],
                "cannot be used with",
            ),
            (
                "--children of a PID that does not exist",
                &["--json", "--children", "-p", "2147483646"],
                "gltop: no such process: 2147483646",
            ),
        ],
    ));
    rows.extend(misuses(
        &["-p", "{pid}"],
        &[
            (
                "unknown short flag",
                &["-x"],
                "unexpected argument '-x' found",
            ),
            (
                "non-numeric interval",
                &["-d", "soon"],
                "not a number of seconds",
            ),
            ("zero interval", &["-d", "0"], INTERVAL),
            ("negative interval", &["-d", "-1"], INTERVAL),
            ("interval below the minimum", &["-d", "0.01"], INTERVAL),
            ("interval above the maximum", &["-d", "3601"], INTERVAL),
            ("infinite interval", &["-d", "inf"], INTERVAL),
            ("NaN interval", &["-d", "nan"], INTERVAL),
            (
                "count flag without value",
                &["--json", "-n"],
                "a value is required for '--iterations <COUNT>'",
            ),
            ("zero count", &["--json", "-n", "0"], COUNT),
            ("negative count", &["--json", "-n", "-1"], COUNT),
            ("non-numeric count", &["--json", "-n", "many"], COUNT),
            (
                "count beyond u64",
                &["--json", "-n", "99999999999999999999"],
                COUNT,
            ),
            (
                "zero greenlet capacity",
                &["--max-greenlets", "0"],
                CAPACITY,
            ),
            (
                "huge edge capacity",
                &["--max-edges", "99999999999"],
                CAPACITY,
            ),
            (
                "capacity above the maximum",
                &["--max-greenlets", "4194305"],
                CAPACITY,
            ),
            ("non-numeric capacity", &["--max-edges", "lots"], CAPACITY),
            (
                "negative dead greenlets kept",
                &["--max-dead", "-1"],
                MAX_DEAD,
            ),
            (
                "non-numeric dead greenlets kept",
                &["--max-dead", "all"],
                MAX_DEAD,
            ),
            (
                "dead greenlets kept above the maximum",
                &["--max-dead", "4194305"],
                MAX_DEAD,
            ),
            (
                "negative time to keep exited processes",
                &["--keep-exited", "-1"],
                "a time to keep exited processes is a number of seconds in 0..=86400",
            ),
            (
                "non-numeric time to keep exited processes",
                &["--keep-exited", "forever"],
                "not a number of seconds",
            ),
            (
                "exited processes kept above the maximum",
                &["--max-exited", "100001"],
                "a number of exited processes is an integer in 0..=100000",
            ),
            (
                "unknown attach mode",
                &["--attach", "kprobe"],
                "invalid value 'kprobe' for '--attach <MODE>'",
            ),
            ("invalid --listen", &["--listen", "nowhere"], LISTEN),
            ("--listen port out of range", &["--listen", "65536"], LISTEN),
            (
                "--listen without a port",
                &["--listen", "127.0.0.1"],
                LISTEN,
            ),
            (
                "--listen with a host name",
                &["--listen", "localhost:9464"],
                LISTEN,
            ),
            (
                "--listen with --json",
                &["--listen", "9464", "--json"],
                "'--listen <ADDR>' cannot be used with '--json'",
            ),
            (
                "--listen with --follow",
                &["--listen", "9464", "--follow"],
                "'--listen <ADDR>' cannot be used with '--follow'",
            ),
            (
                "--per-pid without --listen",
                &["--json", "--per-pid"],
                "--per-pid and --greenlet-names label the metrics of --listen",
            ),
            (
                "zero greenlet names",
                &["--listen", "9464", "--greenlet-names", "0"],
                NAMES,
            ),
            (
                "too many greenlet names",
                &["--listen", "9464", "--greenlet-names", "101"],
                NAMES,
            ),
            (
                "an address of no interface here",
                &["--listen", "192.0.2.1:9464"],
                "cannot listen on 192.0.2.1:9464: Cannot assign requested address",
            ),
            ("sampling frequency 0", &["--sample", "--hz", "0"], HZ),
            (
                "sampling frequency too high",
                &["--sample", "--hz", "10001"],
                HZ,
            ),
            ("negative sampling frequency", &["--hz", "-5"], HZ),
            (
                "non-numeric sampling frequency",
                &["--sample", "--hz", "fast"],
                HZ,
            ),
            ("blocking threshold 0", &["--block-ms", "0"], BLOCK),
            (
                "negative blocking threshold",
                &["--block-ms", "-100"],
                BLOCK,
            ),
            (
                "fractional blocking threshold",
                &["--block-ms", "2.5"],
                BLOCK,
            ),
            (
                "sampled mode with an attach mode",
                &["--json", "--sample", "--attach", "usdt"],
                "--sample attaches no switch probe: --attach does not apply to it",
            ),
            (
                "sampled mode with uprobes",
                &["--json", "--sample", "--attach", "uprobe"],
                "--sample attaches no switch probe",
            ),
            (
                "sampled mode following forks",
                &["--json", "--sample", "--follow"],
                "--sample does not follow forks yet",
            ),
            ("negative hit cost", &["--hit-cost-ns", "-3"], COST),
            ("NaN hit cost", &["--hit-cost-ns", "nan"], COST),
            // The test's stdout is a pipe: the live view has no terminal.
            (
                "live view without a terminal",
                &[],
                "the live view needs a terminal on stdout; use --json",
            ),
        ],
    ));
    check_all("gltop", &gltop_bin(), &[], &rows);
}

/// `gltop record`: flags (no BPF needed: they are checked first), and the file it cannot
/// write, found before recording.
#[test]
fn gltop_record_flags() {
    const DURATION: &str = "a duration is a number of seconds above 0 and at most 86400";
    const HZ: &str = "a sampling frequency is an integer in 1..=10000";
    let dir = std::env::temp_dir().join(format!("gltop-record-misuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let folded = dir.join("out.folded");
    let folded = folded.to_str().unwrap();
    let base = ["record", "-p", "{pid}", "--folded", folded];
    let mut rows = misuses(
        &[],
        &[
            (
                "record without arguments",
                &["record"],
                "required arguments were not provided: --pid <PID> --duration <SECONDS> --folded <FILE>",
            ),
            (
                "record without --folded",
                &["record", "-p", "{pid}", "-d", "1"],
                "required arguments were not provided: --folded <FILE>",
            ),
            (
                "a misspelt subcommand",
                &["recrod"],
                "unexpected argument 'recrod' found",
            ),
            (
                "record after the live view's flags",
                &["-p", "{pid}", "record"],
                "the subcommand 'record' cannot be used with '--pid <PID>'",
            ),
        ],
    );
    rows.extend(misuses(
        &base,
        &[
            ("zero duration", &["-d", "0"], DURATION),
            ("negative duration", &["-d", "-1"], DURATION),
            ("NaN duration", &["-d", "nan"], DURATION),
            ("duration beyond a day", &["-d", "86401"], DURATION),
            (
                "non-numeric duration",
                &["-d", "soon"],
                "not a number of seconds",
            ),
            ("zero rate", &["-d", "1", "--hz", "0"], HZ),
            ("rate above the maximum", &["-d", "1", "--hz", "10001"], HZ),
            ("non-numeric rate", &["-d", "1", "--hz", "fast"], HZ),
            (
                "a live-view flag",
                &["-d", "1", "--json"],
                "unexpected argument '--json' found",
            ),
            (
                "duration given twice",
                &["-d", "1", "-d", "2"],
                "'--duration <SECONDS>' cannot be used multiple times",
            ),
            (
                "greenlet without its value",
                &["-d", "1", "--greenlet"],
                "a value is required for '--greenlet <ID|NAME>'",
            ),
        ],
    ));
    rows.extend(misuses(
        &[],
        &[
            (
                "folded stacks in a missing directory",
                &[
                    "record",
                    "-p",
                    "{pid}",
                    "-d",
                    "1",
                    "--folded",
                    "/nonexistent-gltop-dir/out.folded",
                ],
                "cannot write the folded stacks to /nonexistent-gltop-dir/out.folded",
            ),
            (
                "flame graph in a missing directory",
                &[
                    "record",
                    "-p",
                    "{pid}",
                    "-d",
                    "1",
                    "--folded",
                    folded,
                    "--svg",
                    "/nonexistent-gltop-dir/out.svg",
                ],
                "cannot write the flame graph to /nonexistent-gltop-dir/out.svg",
            ),
        ],
    ));
    check_all("gltop", &gltop_bin(), &[], &rows);
    std::fs::remove_dir_all(&dir).ok();
}

/// `gltop record` on processes it cannot record: gone, or without the runtime's published
/// sample layout.
#[test]
fn gltop_record_targets_it_cannot_sample() {
    let dir = std::env::temp_dir().join(format!("gltop-record-targets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let folded = dir.join("out.folded").to_str().unwrap().to_string();
    let record = |case: &str, pid: i32, expect: &str| Misuse {
        case: case.to_string(),
        args: [
            "record",
            "-p",
            &pid.to_string(),
            "-d",
            "1",
            "--folded",
            &folded,
        ]
        .map(String::from)
        .to_vec(),
        expect: expect.to_string(),
    };
    let mut gone = Command::new("true").spawn().unwrap();
    let reaped = gone.id() as i32;
    gone.wait().unwrap();
    let mut rows = vec![record(
        "a reaped child's PID",
        reaped,
        &format!("no such process: {reaped}"),
    )];
    // The privilege check comes before the layout is looked for.
    let sleeper = Proc::spawn(Command::new("sleep").arg("60"));
    if bpf_or_skip("gltop_record_targets_it_cannot_sample (no layout)") {
        rows.push(record(
            "a process without the sample layout",
            sleeper.pid(),
            "publishes no sample layout (no .greenlet_sample section)",
        ));
    }
    check_all("gltop", &gltop_bin(), &[], &rows);
    std::fs::remove_dir_all(&dir).ok();
}

/// `gltop -p PID --json`: a misuse found when attaching.
fn attach(case: &str, pid: i32, expect: &str) -> Misuse {
    Misuse {
        case: case.to_string(),
        args: vec!["-p".into(), pid.to_string(), "--json".into()],
        expect: expect.to_string(),
    }
}

#[test]
fn gltop_pids_of_no_process() {
    // Reaped: its PID is free (PIDs are reused only after wrapping round pid_max).
    let mut gone = Command::new("true").spawn().unwrap();
    let reaped = gone.id() as i32;
    gone.wait().unwrap();
    // A zombie: exited, not reaped yet.
    let mut zombie = Command::new("true").spawn().unwrap();
    let zpid = zombie.id() as i32;
    poll_until(Instant::now() + Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{zpid}/stat"))
            .is_ok_and(|s| gltop::loader::process::parse_stat(&s).is_some_and(|(st, _)| st == 'Z'))
            .then_some(())
    })
    .expect("no zombie");
    let rows = vec![
        attach(
            "a reaped child's PID",
            reaped,
            &format!("no such process: {reaped}"),
        ),
        attach("a zombie's PID", zpid, &format!("no such process: {zpid}")),
        attach(
            "PID beyond any pid_max",
            4194305,
            "no such process: 4194305",
        ),
        attach("the largest PID", i32::MAX, "no such process: 2147483647"),
    ];
    check_all("gltop", &gltop_bin(), &[], &rows);
    zombie.wait().unwrap();
}

#[test]
fn gltop_listen_on_an_address_in_use_or_for_a_missing_pid() {
    // Flags and PIDs are checked, and the address bound, before anything is attached: no
    // BPF is needed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut gone = Command::new("true").spawn().unwrap();
    let reaped = gone.id() as i32;
    gone.wait().unwrap();
    let me = std::process::id().to_string();
    let row = |case: &str, args: Vec<String>, expect: String| Misuse {
        case: case.into(),
        args,
        expect,
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let rows = vec![
        row(
            "an address already in use",
            s(&["-p", &me, "--listen", &addr]),
            format!("cannot listen on {addr}: Address already in use"),
        ),
        row(
            "--listen with a PID that does not exist",
            s(&["-p", &reaped.to_string(), "--listen", "127.0.0.1:0"]),
            format!("no such process: {reaped}"),
        ),
        row(
            "--listen with several PIDs, one of which does not exist",
            s(&["-p", &format!("{me},{reaped}"), "--listen", "127.0.0.1:0"]),
            format!("no such process: {reaped}"),
        ),
    ];
    check_all("gltop", &gltop_bin(), &[], &rows);
    drop(taken);
}

/// A kernel thread (PF_KTHREAD in the flags of `/proc/PID/stat`), if this PID namespace
/// shows one.
fn a_kernel_thread() -> Option<i32> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort();
    pids.into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            // After the parenthesised name: state, ppid, pgrp, session, tty, tpgid, flags.
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().nth(6)?.parse::<u64>().ok())
                .is_some_and(|flags| flags & PF_KTHREAD != 0)
        })
    })
}

#[test]
fn gltop_processes_without_probes() {
    // The privilege check comes before the probes are looked for.
    if !bpf_or_skip("gltop_processes_without_probes") {
        return;
    }
    let sleeper = Proc::spawn(Command::new("sleep").arg("60"));
    let mut rows = vec![attach(
        "a process without probes",
        sleeper.pid(),
        &format!(
            "process {} (sleep) has no greenlet USDT probes in /usr/bin/sleep",
            sleeper.pid()
        ),
    )];
    rows.push(Misuse {
        case: "sampling a process without the runtime".into(),
        args: vec![
            "-p".into(),
            sleeper.pid().to_string(),
            "--json".into(),
            "--sample".into(),
        ],
        expect: format!(
            "cannot sample process {} (sleep): /usr/bin/sleep publishes no sample layout",
            sleeper.pid()
        ),
    });
    let kernel_thread = a_kernel_thread().ok_or("no kernel thread is visible here".to_string());
    if require("the kernel-thread case", kernel_thread.clone().map(drop)) {
        let k = kernel_thread.unwrap();
        let comm = std::fs::read_to_string(format!("/proc/{k}/comm")).unwrap();
        rows.push(attach(
            "a kernel thread",
            k,
            &format!("process {k} ({}) has no greenlet USDT probes", comm.trim()),
        ));
    }
    check_all("gltop", &gltop_bin(), &[], &rows);
}

/// Whether this process runs as root (the effective uid of `/proc/self/status`).
fn effective_uid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

#[test]
fn gltop_without_bpf_privilege_says_which_is_missing() {
    if !require(
        "gltop_without_bpf_privilege_says_which_is_missing",
        tool("setpriv", "--version"),
    ) {
        return;
    }
    // A process with greenlet probes, which gltop could trace with the privilege.
    let t = target(&["--threads", "1", "--switches", "10"]);
    let rows = vec![attach(
        "no BPF privilege",
        t.pid(),
        "not permitted to load BPF programs: needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)",
    )];
    // The same user, every capability dropped from every set.
    let drop_all = [
        "setpriv",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--",
    ];
    check_all("gltop", &gltop_bin(), &drop_all, &rows);

    // An unprivileged user (nobody): only root can switch to it.
    let root = if effective_uid_is_root() {
        Ok(())
    } else {
        Err("not root".to_string())
    };
    if !require("the unprivileged-user case", root) {
        return;
    }
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    // A copy of gltop that nobody can run wherever the build is (the target directory of a
    // clone in /root is not open to other users).
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("gltop-misuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("gltop");
    std::fs::copy(gltop_bin(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let runs = Command::new(nobody[0])
        .args(&nobody[1..])
        .arg(&copy)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(runs, "user 65534 cannot run {}", copy.display());
    check_all("gltop", &copy, &nobody, &rows);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn workload_flags() {
    const SECONDS: &str = "is not a positive number of seconds";
    let mut rows = clap_misuses(&[], "--threads", "--no-trace");
    rows.extend(misuses(
        &[],
        &[
            (
                "zero threads",
                &["--threads=0"],
                "invalid value '0' for '--threads <THREADS>': 0 is not in 1..=1024",
            ),
            (
                "negative threads",
                &["--threads=-1"],
                "-1 is not in 1..=1024",
            ),
            (
                "too many threads",
                &["--threads=1025"],
                "1025 is not in 1..=1024",
            ),
            (
                "non-numeric threads",
                &["--threads=many"],
                "invalid value 'many' for '--threads <THREADS>'",
            ),
            (
                "zero greenlets",
                &["--greenlets=0"],
                "0 is not in 1..=10000",
            ),
            (
                "switches beyond u64",
                &["--switches=99999999999999999999"],
                "number too large",
            ),
            (
                "non-numeric throws",
                &["--throws=x"],
                "invalid value 'x' for '--throws <THROWS>'",
            ),
            (
                "more kills than greenlets",
                &["--kills=5", "--greenlets=4"],
                "--kills 5 is more than --greenlets 4",
            ),
            (
                "zero iterations",
                &["--iterations=0"],
                "invalid value '0' for '--iterations <ITERATIONS>'",
            ),
            (
                "negative seed",
                &["--seed", "-1"],
                "unexpected argument '-1' found",
            ),
            ("zero duration", &["--duration=0"], SECONDS),
            ("negative duration", &["--duration=-1"], SECONDS),
            ("NaN duration", &["--duration=nan"], SECONDS),
            (
                "non-numeric duration",
                &["--duration=soon"],
                "'soon' is not a number of seconds",
            ),
            (
                "conflicting flags",
                &["--forever", "--duration=1"],
                "cannot be used with",
            ),
            (
                "unknown wait mode",
                &["--wait=later"],
                "invalid value 'later' for '--wait <WAIT>'",
            ),
            (
                "unknown linger mode",
                &["--linger=bogus"],
                "invalid value 'bogus' for '--linger <LINGER>'",
            ),
            (
                "start file without its value",
                &["--wait-for-file"],
                "a value is required for '--wait-for-file <PATH>'",
            ),
            (
                "wait for a tracer twice",
                &["--wait-for-tracer", "--wait-for-tracer"],
                "the argument '--wait-for-tracer' cannot be used multiple times",
            ),
            (
                "non-numeric spin",
                &["--spin-us", "x"],
                "invalid value 'x' for '--spin-us <SPIN_US>'",
            ),
            (
                "negative exec delay",
                &["--then-exec-sleep", "-1"],
                "unexpected argument '-1' found",
            ),
        ],
    ));
    check_all("workload", &example("workload"), &[], &rows);
}

#[test]
fn demo_flags() {
    const SECONDS: &str = "not in 0..=1e9 seconds";
    let mut rows = clap_misuses(&[], "--threads", "--wait-for-tracer");
    rows.extend(misuses(
        &[],
        &[
            ("zero threads", &["--threads", "0"], "0 is not in 1..=1024"),
            (
                "too many threads",
                &["--threads", "100000"],
                "100000 is not in 1..=1024",
            ),
            (
                "non-numeric threads",
                &["--threads", "x"],
                "invalid value 'x' for '--threads <THREADS>'",
            ),
            (
                "negative rate",
                &["--conns-per-sec", "-5"],
                "unexpected argument '-5' found",
            ),
            (
                "I/O wait beyond an hour",
                &["--io-us", "18446744073709551615"],
                "is not in 0..=3600000000",
            ),
            (
                "timeout beyond an hour",
                &["--timeout-ms", "3600001"],
                "is not in 0..=3600000",
            ),
            ("negative seconds", &["--seconds", "-1"], SECONDS),
            ("infinite seconds", &["--seconds", "inf"], SECONDS),
            ("NaN seconds", &["--seconds", "nan"], SECONDS),
            ("seconds beyond a Duration", &["--seconds", "1e20"], SECONDS),
            (
                "non-numeric seconds",
                &["--seconds", "soon"],
                "not a number of seconds",
            ),
            (
                "start file without its value",
                &["--wait-for-file"],
                "a value is required for '--wait-for-file <PATH>'",
            ),
        ],
    ));
    check_all("demo", &example("demo"), &[], &rows);
}

#[test]
fn million_flags() {
    let mut rows = clap_misuses(&[], "--count", "--json");
    rows.extend(misuses(
        &[],
        &[
            (
                "zero count",
                &["--count", "0"],
                "--count must be at least 1",
            ),
            (
                "negative count",
                &["--count", "-1"],
                "invalid value '-1' for '--count'",
            ),
            (
                "non-numeric count",
                &["--count", "many"],
                "invalid value 'many' for '--count",
            ),
            (
                "non-numeric stack size",
                &["--stack-size", "big"],
                "invalid value 'big'",
            ),
        ],
    ));
    check_all("million", &example("million"), &[], &rows);
}

#[test]
fn switch_loop_arguments() {
    // Not clap: two positional arguments, CASE and COUNT, and no --help.
    const USAGE: &str = "; usage: switch_loop CASE COUNT  (CASE: switch_two_greenlets,";
    let rows = misuses(
        &[],
        &[
            (
                "no arguments",
                &[],
                "switch_loop: 2 arguments expected, 0 given",
            ),
            ("one argument", &["lifetime"], "1 given"),
            ("three arguments", &["lifetime", "1", "2"], "3 given"),
            ("asking for help", &["--help"], USAGE),
            (
                "unknown case",
                &["nosuch", "5"],
                "unknown case \"nosuch\"; usage:",
            ),
            (
                "non-numeric count",
                &["lifetime", "many"],
                "COUNT must be a non-negative integer",
            ),
            ("negative count", &["lifetime", "-1"], "got \"-1\""),
        ],
    );
    check_all("switch_loop", &example("switch_loop"), &[], &rows);
}
