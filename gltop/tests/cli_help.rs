//! `--help` of every binary with a command line, compared exactly with the text stored in
//! `tests/snapshots/NAME.help.txt` (issue 6, item 4). On a mismatch the test prints a diff;
//! `UPDATE_SNAPSHOTS=1 cargo test -p gltop --test cli_help` rewrites the files (review
//! the change with `git diff tests/snapshots`).
//!
//! The text must not depend on the terminal: it is the same through a pipe with any
//! `COLUMNS`, and on a 40-column terminal (a pseudo-terminal made by util-linux `script`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{ci, example, require, root, tool};

/// The binaries with a command line, with the arguments before `--help` (a subcommand): gltop
/// and `gltop record`, the workloads' binaries (`workloads/src/bin/`) and the runtime's
/// `million` example (`switch_loop` takes two positional arguments and has no `--help`).
fn binaries() -> Vec<(&'static str, PathBuf, &'static [&'static str])> {
    let gltop = PathBuf::from(env!("CARGO_BIN_EXE_gltop"));
    vec![
        ("gltop", gltop.clone(), &[]),
        ("gltop-record", gltop, &["record"]),
        ("workload", example("workload"), &[]),
        ("demo", example("demo"), &[]),
        ("million", example("million"), &[]),
    ]
}

fn snapshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.help.txt"))
}

/// A command that prints plain text whatever the environment says about colours.
fn plain(cmd: &mut Command) -> &mut Command {
    cmd.env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CLICOLOR")
        .stdin(Stdio::null())
}

/// `bin args... --help` through a pipe, with `COLUMNS=columns`.
fn help_piped(name: &str, bin: &Path, args: &[&str], columns: &str) -> String {
    let out = plain(
        Command::new(bin)
            .args(args)
            .arg("--help")
            .env("COLUMNS", columns),
    )
    .output()
    .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} --help: {}: {err}", out.status);
    assert!(err.is_empty(), "{name} --help wrote on stderr: {err}");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// `bin args... --help` on a pseudo-terminal 40 columns wide (made by `script`).
fn help_on_a_terminal(name: &str, bin: &Path, args: &[&str]) -> String {
    let inner = format!(
        "stty cols 40 rows 24; exec '{}' {} --help",
        bin.display(),
        args.join(" ")
    );
    let out = plain(Command::new("script").args(["-q", "-e", "-c", &inner, "/dev/null"]))
        .output()
        .unwrap_or_else(|e| panic!("cannot run script: {e}"));
    assert!(out.status.success(), "{name} --help on a terminal: {out:?}");
    // The terminal turns each newline into CR LF.
    String::from_utf8(out.stdout)
        .expect("help is UTF-8")
        .replace("\r\n", "\n")
}

/// A line diff of `want` (-) and `got` (+), with two lines of context around each change.
fn diff(want: &str, got: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    // Longest common subsequence table, from the ends.
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(op, _)| *op != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (op, line)) in ops.iter().enumerate() {
        if near_change(k) {
            out.push_str(&format!("{op} {line}\n"));
            skipped = false;
        } else if !skipped {
            out.push_str("  ...\n");
            skipped = true;
        }
    }
    if want.ends_with('\n') != got.ends_with('\n') {
        out.push_str("(the final newline differs)\n");
    }
    out
}

#[test]
fn the_diff_shows_what_changed() {
    let d = diff("a\nb\nc\nd\ne\nf\ng\n", "a\nb\nc\nD\ne\nf\ng\nh\n");
    assert_eq!(d, "  ...\n  b\n  c\n- d\n+ D\n  e\n  f\n  g\n+ h\n", "{d}");
}

#[test]
fn help_matches_the_snapshots_whatever_the_terminal() {
    let update = std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1");
    if update && ci() {
        panic!("UPDATE_SNAPSHOTS=1 under CI=true: snapshots are updated by a person, not by CI");
    }
    let on_a_terminal = require(
        "the check of --help on a 40-column terminal",
        tool("script", "--version"),
    );
    let mut failures = Vec::new();
    for (name, bin, args) in binaries() {
        let help = help_piped(name, &bin, args, "80");
        for columns in ["20", "300"] {
            if help_piped(name, &bin, args, columns) != help {
                failures.push(format!(
                    "{name} --help changes with COLUMNS={columns}: wrap it at a fixed width"
                ));
            }
        }
        if on_a_terminal {
            let tty = help_on_a_terminal(name, &bin, args);
            if tty != help {
                failures.push(format!(
                    "{name} --help differs on a 40-column terminal:\n{}",
                    diff(&help, &tty)
                ));
            }
        }

        let path = snapshot_path(name);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &help).unwrap();
            eprintln!("updated {}", path.display());
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == help => {}
            Ok(want) => failures.push(format!(
                "{name} --help differs from {} (- stored, + now):\n{}",
                path.display(),
                diff(&want, &help)
            )),
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\nIf the new text is right: UPDATE_SNAPSHOTS=1 cargo test -p gltop --test \
         cli_help, then review git diff tests/snapshots.",
        failures.join("\n\n")
    );
}

/// The README and `gltop --help` name the same default attach mode (the help's comes from the
/// code), and the README calls no other mode the default.
#[test]
fn readme_and_help_agree_on_the_default_attach_mode() {
    let help = help_piped("gltop", Path::new(env!("CARGO_BIN_EXE_gltop")), &[], "80");
    let attach = &help[help.find("--attach <MODE>").expect("--attach in the help")..];
    let attach = &attach[..attach.find("--hit-cost-ns").unwrap_or(attach.len())];
    let modes: Vec<&str> = attach
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ")?.split(':').next())
        .collect();
    let default = attach
        .split("[default: ")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .expect("a default attach mode in the help");
    assert!(modes.contains(&default), "{modes:?} {default}");

    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    // Joined lines: a phrase may be wrapped.
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let called_default: Vec<&str> = modes
        .iter()
        .copied()
        .filter(|m| {
            ["(default)", "(the default)"]
                .iter()
                .any(|d| readme.contains(&format!("`{m}` {d}")))
        })
        .collect();
    assert_eq!(
        called_default,
        [default],
        "the README calls {called_default:?} the default attach mode; gltop --help says {default}"
    );
}
