//! Runs `examples/tracing.rs` (the seed's Origin/Target example, spec R5 and §13.1) and
//! compares its output with the seed's transcript: lines 2 to 6 byte for byte; lines 1 and 7
//! differ only in how the unnamed main greenlet prints, which must be the runtime's `Display`
//! of an unnamed main greenlet (`<greenlet #ID WORDS>`), with the state words Python shows in
//! the same places (`docs/reference/python-examples/z01_tracing_doc_doctest.out`): suspended in
//! line 1, where the callback runs in `origin`; current in line 7, where it runs in main.

mod support;

use std::process::{Command, Output};

use support::workload::example_bin;

/// The seed's transcript: the expected output of the `settrace` example on the tracing page,
/// `docs/seed/greenlet-tracing.txt`, lines 59 to 65, copied here unchanged.
/// `<greenlet.greenlet object ...>` is how Python prints the unnamed main greenlet.
const SEED_TRANSCRIPT: [&str; 7] = [
    "Transfer from <greenlet.greenlet object ...> to <origin> with switch",
    "In origin",
    "Transfer from <origin> to <target> with switch",
    "Transfer from <target> to <origin> with switch",
    "Returned to origin",
    "Transfer from <origin> to <target> with throw",
    "Transfer from <target> to <greenlet.greenlet object ...> with switch",
];

/// How the seed's transcript shows the main greenlet.
const SEED_MAIN: &str = "<greenlet.greenlet object ...>";

/// Runs the example, built (and up to date) for this test's profile.
fn run_example() -> Output {
    let binary = example_bin("tracing");
    Command::new(&binary)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()))
}

/// Splits `line` around the seed line's main-greenlet placeholder: checks that the text before
/// and after it is the seed's, byte for byte, and returns what stands in its place.
fn main_greenlet_in<'a>(line: &'a str, seed: &str) -> &'a str {
    let (before, after) = seed
        .split_once(SEED_MAIN)
        .expect("placeholder in seed line");
    assert!(
        line.starts_with(before)
            && line.ends_with(after)
            && line.len() > before.len() + after.len(),
        "{line:?} does not match the seed's {seed:?} outside the main greenlet"
    );
    &line[before.len()..line.len() - after.len()]
}

/// Parses `<greenlet #ID WORDS>` (an unnamed greenlet's Display) into its id and state words.
fn unnamed_greenlet(shown: &str) -> (u64, &str) {
    let inner = shown
        .strip_prefix("<greenlet #")
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or_else(|| panic!("{shown:?} is not an unnamed greenlet's Display"));
    let (id, words) = inner
        .split_once(' ')
        .unwrap_or_else(|| panic!("no state words in {shown:?}"));
    let id = id.parse().unwrap_or_else(|_| panic!("bad id in {shown:?}"));
    (id, words)
}

#[test]
fn example_tracing_prints_the_seed_transcript() {
    let output = run_example();
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the example failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        SEED_TRANSCRIPT.len(),
        "line count differs; output:\n{stdout}"
    );
    assert!(stdout.ends_with('\n'));

    // Lines 2 to 6: byte for byte.
    assert_eq!(lines[1..6], SEED_TRANSCRIPT[1..6]);

    // Lines 1 and 7: the same but for the main greenlet, printed as an unnamed main greenlet.
    let first = unnamed_greenlet(main_greenlet_in(lines[0], SEED_TRANSCRIPT[0]));
    let last = unnamed_greenlet(main_greenlet_in(lines[6], SEED_TRANSCRIPT[6]));
    assert_eq!(first.0, last.0, "both lines show the same main greenlet");
    assert_ne!(first.0, 0);
    assert_eq!(first.1, "suspended active started main");
    assert_eq!(last.1, "current active started main");
}

/// The comparison itself must be able to fail: a transcript with another main greenlet id on
/// line 7, or a changed line, is rejected.
#[test]
fn example_tracing_comparison_rejects_other_output() {
    let bad_line = std::panic::catch_unwind(|| {
        main_greenlet_in(
            "Transfer from <target> to <greenlet #1 current active started main> with throw",
            SEED_TRANSCRIPT[6],
        )
    });
    assert!(bad_line.is_err());
    let named = std::panic::catch_unwind(|| unnamed_greenlet("<origin>"));
    assert!(named.is_err());
    assert_eq!(
        unnamed_greenlet(main_greenlet_in(
            "Transfer from <greenlet #12 suspended active started main> to <origin> with switch",
            SEED_TRANSCRIPT[0],
        )),
        (12, "suspended active started main")
    );
}
