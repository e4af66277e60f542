//! The probe vocabulary has one definition, `greenlet::probes` ([`PROBE_NAMES`], [`PROVIDER`],
//! [`Outcome`]); everything that spells it out in text must agree with it (issue 11): the D
//! provider `probes/greenlet.d`, the bpftrace scripts that name outcomes, and the READMEs'
//! outcome lists. Each list is parsed strictly: a missing, extra, renumbered or renamed
//! entry fails.

use std::path::Path;

use greenlet::probes::{Outcome, PROBE_NAMES, PROVIDER};

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// The outcome list every text uses: `0 returned, 1 error, ..., 5 discarded`.
fn expected_list() -> Vec<(u8, String)> {
    Outcome::ALL
        .iter()
        .map(|o| (o.code(), o.name().to_string()))
        .collect()
}

/// Every `N name` pair of the comma-separated list that starts at each occurrence of
/// `0 returned` in `text`: one list per occurrence. A list ends at the first item that is
/// not `N name` (a parenthesised remark after a name is allowed).
fn outcome_lists(text: &str) -> Vec<Vec<(u8, String)>> {
    let mut lists = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("0 returned") {
        let mut list = Vec::new();
        for item in rest[at..].split(',') {
            let item = item.trim_start_matches(|c: char| c.is_whitespace() || c == '*');
            let mut words = item.splitn(2, ' ');
            let (Some(code), Some(tail)) = (words.next(), words.next()) else {
                break;
            };
            let Ok(code) = code.parse::<u8>() else {
                break;
            };
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            list.push((code, name));
            if list.len() == Outcome::ALL.len() {
                break;
            }
        }
        lists.push(list);
        rest = &rest[at + 1..];
    }
    lists
}

#[test]
fn the_d_file_declares_the_probes_in_the_runtime_order() {
    let d = read("probes/greenlet.d");
    assert!(
        d.contains(&format!("provider {PROVIDER} {{")),
        "probes/greenlet.d: provider {PROVIDER}"
    );
    let declared: Vec<&str> = d
        .lines()
        .filter_map(|l| l.trim().strip_prefix("probe "))
        .map(|l| l.split('(').next().unwrap_or_default().trim())
        .collect();
    assert_eq!(declared, PROBE_NAMES, "probes/greenlet.d's probes");
}

#[test]
fn the_d_file_and_the_readmes_list_the_outcomes_of_the_runtime() {
    for path in ["probes/greenlet.d", "README.md", "scripts/README.md"] {
        let lists = outcome_lists(&read(path));
        assert!(
            !lists.is_empty(),
            "{path}: no outcome list (0 returned, ...)"
        );
        for list in lists {
            assert_eq!(list, expected_list(), "{path}: outcome list");
        }
    }
}

#[test]
fn the_deaths_script_names_each_outcome_code_as_the_runtime_does() {
    let script = read("scripts/deaths.bt");
    // In the `dead` probe's block, each `arg1 == N` is followed by the name of outcome N as
    // the next string literal.
    let dead = script
        .find(":greenlet:dead")
        .expect("scripts/deaths.bt: a greenlet:dead probe");
    let mut named = Vec::new();
    let mut rest = &script[dead..];
    while let Some(at) = rest.find("arg1 == ") {
        rest = &rest[at + "arg1 == ".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let code: u8 = digits.parse().expect("a code after arg1 ==");
        let quoted = rest.split('"').nth(1).expect("a name after the code");
        named.push((code, quoted.to_string()));
    }
    assert_eq!(named, expected_list(), "scripts/deaths.bt");
}

#[test]
fn the_list_parser_rejects_what_differs() {
    let good = "0 returned, 1 error, 2 exit, 3 panic, 4 thread_exit, 5 discarded";
    assert_eq!(outcome_lists(good), vec![expected_list()]);
    for bad in [
        "0 returned, 1 error, 2 exit, 3 panic, 4 thread exit, 5 discarded",
        "0 returned, 1 error, 2 exit, 3 panic, 5 discarded",
        "0 returned, 1 error, 2 exit, 3 panic, 4 thread_exit",
    ] {
        assert_ne!(outcome_lists(bad), vec![expected_list()], "{bad}");
    }
}
