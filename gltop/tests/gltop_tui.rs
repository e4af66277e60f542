//! The TUI, driven in tmux against the demo: header, a known greenlet name, sorting, the
//! detail view, help, and the exit when the demo ends.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use support::tmux::{bpf_and_tmux_or_skip, Tmux};
use support::*;

/// The header line of the table, e.g. `ID NAME▲ PARENT ...`.
fn table_header(screen: &str) -> String {
    screen
        .lines()
        .find(|l| l.contains("PARENT") && l.contains("STATE"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn tui_shows_header_names_sorting_detail_help_and_exits_with_the_demo() {
    if !bpf_and_tmux_or_skip("tui_shows_header_names_sorting_detail_help_and_exits_with_the_demo") {
        return;
    }
    let mut demo = Proc::spawn(
        Command::new(example("demo"))
            // It ends when the tour is over (SIGTERM below), not on a timer that a loaded
            // machine can run out of in the middle of the tour.
            .args(["--wait-for-tracer", "--seconds", "600", "--hog-every", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let pid = demo.pid();
    let cmd = format!(
        "{} -p {pid} -d 0.5; echo GLTOP_EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_gltop")
    );
    let tmux = Tmux::start("tour", &cmd);
    let long = Duration::from_secs(30);

    // The header: process, threads, greenlets, rates, tracing cost.
    let screen = tmux.wait_for("the header with rates", long, |s| {
        s.contains(&format!("pid {pid} (demo)")) && s.contains("of a CPU")
    });
    for want in [
        "threads",
        "greenlets",
        "alive",
        "dead",
        "throws",
        "tracing cost",
        "of a CPU",
    ] {
        assert!(screen.contains(want), "header shows {want:?}:\n{screen}");
    }
    // Known names: the demo's long-lived greenlets, seen from their creation.
    tmux.wait_for("the demo's greenlets by name", long, |s| {
        s.contains("cpu-hog") && s.contains("hub") && s.contains("acceptor")
    });
    assert!(
        table_header(&tmux.screen()).contains("CPU%▼"),
        "default sort: CPU% descending"
    );

    // Sorting: h moves the sort to the left (SW/S, STATE, PARENT, NAME), i inverts it.
    tmux.keys(&["h", "h", "h", "h"]);
    tmux.wait_for("sort by NAME ascending", long, |s| {
        table_header(s).contains("NAME▲")
    });
    tmux.keys(&["i"]);
    let screen = tmux.wait_for("sort by NAME descending", long, |s| {
        table_header(s).contains("NAME▼")
    });
    // Descending by name: `main` (the nameless main greenlets) sorts first.
    let first_row = screen
        .lines()
        .skip_while(|l| !l.contains("PARENT"))
        .nth(1)
        .unwrap_or_default();
    assert!(first_row.contains(" main "), "{screen}");
    tmux.keys(&["s"]);
    tmux.wait_for("s moves to the next column", long, |s| {
        table_header(s).contains("PARENT▲")
    });

    // Detail of the first greenlet by name: an acceptor.
    tmux.keys(&["h"]);
    tmux.wait_for("NAME ascending", long, |s| {
        table_header(s).contains("NAME▲")
    });
    tmux.keys(&["g", "Enter"]);
    // Wait for the whole view: a capture can land in the middle of a redraw.
    let screen = tmux.wait_for("the detail view", long, |s| {
        s.contains("slices (switch-in to switch-out)")
            && s.contains("top edges in")
            && s.contains("top edges out")
            && s.contains("switches in")
    });
    assert!(screen.contains("\"acceptor\""), "{screen}");
    assert!(screen.contains("top edges out"), "{screen}");
    assert!(screen.contains("switches in"), "{screen}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("back to the table", long, |s| !table_header(s).is_empty());

    // Help, closed by any key.
    tmux.keys(&["?"]);
    tmux.wait_for("the help", long, |s| {
        s.contains("gltop help") && s.contains("invert the sort")
    });
    tmux.keys(&["j"]);
    tmux.wait_for("the help closed", long, |s| !s.contains("gltop help"));

    // Pause shows in the header.
    tmux.keys(&["Space"]);
    tmux.wait_for("paused", long, |s| s.contains("PAUSED"));
    tmux.keys(&["Space"]);
    tmux.wait_for("resumed", long, |s| !s.contains("PAUSED"));

    // The demo ends: gltop says so and exits 0.
    demo.signal(Signal::SIGTERM);
    let screen = tmux.wait_for("the demo's end", Duration::from_secs(60), |s| {
        s.contains("GLTOP_EXIT=")
    });
    assert!(
        screen.contains(&format!("gltop: process {pid} (demo) exited")),
        "{screen}"
    );
    assert!(screen.contains("GLTOP_EXIT=0"), "{screen}");
    demo.wait_for(Duration::from_secs(10));
}

#[test]
fn q_quits_and_detaches() {
    if !bpf_and_tmux_or_skip("q_quits_and_detaches") {
        return;
    }
    let t = target(&["--threads", "1", "--switches", "1000000000"]);
    let cmd = format!(
        "{} -p {} -d 0.5 --hit-cost-ns 500; echo GLTOP_EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_gltop"),
        t.pid()
    );
    let tmux = Tmux::start("quit", &cmd);
    tmux.wait_for("the table", Duration::from_secs(30), |s| {
        s.contains(" worker ")
    });
    assert!(semaphores(t.pid()).iter().all(|(_, v)| *v > 0));
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("exit", Duration::from_secs(30), |s| {
        s.contains("GLTOP_EXIT=")
    });
    assert!(screen.contains("GLTOP_EXIT=0"), "{screen}");
    assert!(semaphores_zero_within(t.pid(), Duration::from_secs(10)));
}

/// The demo, waiting for a tracer, for `seconds`, with `extra` options.
fn demo(seconds: u32, extra: &[&str]) -> Proc {
    let seconds = seconds.to_string();
    Proc::spawn(
        Command::new(example("demo"))
            .args(["--wait-for-tracer", "--seconds", &seconds])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// A shell command running gltop on `pid` with `args`, then keeping the pane open.
fn gltop_cmd(pid: i32, args: &str) -> String {
    format!(
        "{} -p {pid} {args}; echo GLTOP_EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_gltop")
    )
}

/// `text` without its escape sequences.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The header: the lines above the table's title (` greenlets (N) ───`).
fn header_lines(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .take_while(|l| !l.starts_with(" greenlets ("))
        .collect()
}

/// The selected row of a styled capture: its index among the table's rows and its text.
/// The table's rows are the lines between its header and the footer (the last line with
/// `quit`); the selected one is drawn reversed.
fn selected_row(styled: &str) -> Option<(usize, String)> {
    let lines: Vec<&str> = styled.lines().collect();
    let head = lines.iter().position(|l| {
        let l = plain(l);
        l.contains("PARENT") && l.contains("STATE")
    })?;
    let foot = lines.iter().rposition(|l| plain(l).contains(" quit "))?;
    lines[head + 1..foot]
        .iter()
        .enumerate()
        .find(|(_, l)| starts_reversed(l))
        .map(|(i, l)| (i, plain(l)))
}

/// Whether the escape sequences before the first character of `line` turn on reverse video
/// (SGR parameter 7).
fn starts_reversed(mut line: &str) -> bool {
    while let Some(rest) = line.strip_prefix("\x1b[") {
        let Some(end) = rest.find(|c: char| ('@'..='~').contains(&c)) else {
            return false;
        };
        if rest[end..].starts_with('m') && rest[..end].split(';').any(|p| p == "7") {
            return true;
        }
        line = &rest[end + 1..];
    }
    false
}

#[test]
fn header_and_column_titles_fit_at_120_and_80_columns() {
    if !bpf_and_tmux_or_skip("header_and_column_titles_fit_at_120_and_80_columns") {
        return;
    }
    let _s = serial();
    // Maps of 24 greenlets and edges cannot hold the demo's live greenlets (about 34): inserts
    // fail within a second, and the header's longest line, with its hint on the map sizes,
    // is shown.
    let demo = demo(120, &[]);
    let pid = demo.pid();
    let args = "-d 0.5 --hit-cost-ns 500 --max-greenlets 24 --max-edges 24";
    let long = Duration::from_secs(30);
    let panes: Vec<(u16, Tmux)> = [120u16, 80]
        .into_iter()
        .map(|w| {
            let tag = format!("fit{w}");
            (w, Tmux::start_sized(&tag, &gltop_cmd(pid, args), w, 40))
        })
        .collect();
    for (w, tmux) in &panes {
        // tmux cuts every line at the pane's width: what is cut is missing from the capture.
        let screen = tmux.wait_for(
            &format!("the header with drops at {w} columns"),
            long,
            |s| {
                let head = header_lines(s).join("\n");
                head.contains("of a CPU")
                    && head.contains("events lost")
                    && head.contains("--max-edges")
            },
        );
        let head = header_lines(&screen).join("\n");
        for want in [
            format!("gltop pid {pid} (demo)"),
            "attached".into(),
            "sites".into(),
            "refresh 0.5s".into(),
            "alive, with greenlets:".into(),
            "since attach".into(),
            "dead".into(),
            "created".into(),
            "switches".into(),
            "throws".into(),
            "total)".into(),
            "tracing cost".into(),
            "of a CPU".into(),
            "dropped".into(),
            "events lost: maps of 24 greenlets and 24 edges full,".into(),
            "see --max-greenlets, --max-edges".into(),
        ] {
            assert!(
                head.contains(&want),
                "{w} columns: {want:?} missing:\n{screen}"
            );
        }
        for line in header_lines(&screen) {
            assert!(line.chars().count() <= *w as usize, "{line:?}");
        }
    }

    // Every column sorted in turn, from CPU% to the right and round: its whole title and the
    // marker are shown, at both widths.
    let titles = [
        "ID",
        "NAME",
        "PARENT",
        "STATE",
        "SW/S",
        "CPU%",
        "ON-CPU",
        "MAX SLICE",
        "SWITCHES",
        "THROWS",
        "TID",
    ];
    let cpu = titles.iter().position(|t| *t == "CPU%").unwrap();
    for step in 0..=titles.len() {
        let title = titles[(cpu + step) % titles.len()];
        for (w, tmux) in &panes {
            if step > 0 {
                tmux.keys(&["l"]);
            }
            let screen = tmux.wait_for(&format!("sorted by {title} at {w} columns"), long, |s| {
                let h = table_header(s);
                h.contains(&format!("{title}▼")) || h.contains(&format!("{title}▲"))
            });
            // No title is cut, the sorted one or another: every word of the table's header
            // is a word of a title, or the sorted title's last word with its marker.
            let words: Vec<&str> = titles.iter().flat_map(|t| t.split(' ')).collect();
            for word in table_header(&screen).split_whitespace() {
                let bare = word.trim_end_matches(['▼', '▲']);
                assert!(
                    words.contains(&bare),
                    "{w} columns: {word:?} is cut:\n{screen}"
                );
            }
        }
    }
}

#[test]
fn selection_keeps_its_row_as_greenlets_die_and_g_is_hinted() {
    if !bpf_and_tmux_or_skip("selection_keeps_its_row_as_greenlets_die_and_g_is_hinted") {
        return;
    }
    let _s = serial();
    // The demo's connections live for a few tens of milliseconds: the rows under the
    // selection change at every refresh, and a dead one sinks to the bottom of the CPU%
    // order once its last interval is over.
    let demo = demo(120, &[]);
    let tmux = Tmux::start_sized(
        "select",
        &gltop_cmd(demo.pid(), "-d 0.5 --hit-cost-ns 500"),
        120,
        40,
    );
    let long = Duration::from_secs(30);
    let screen = tmux.wait_for("connections in the table", long, |s| s.contains("conn-"));
    let footer = screen
        .lines()
        .rfind(|l| l.contains(" quit "))
        .unwrap_or_default();
    assert!(footer.contains("g top"), "the footer hints g:\n{screen}");

    let row = 6;
    for _ in 0..row {
        tmux.keys(&["j"]);
    }
    tmux.wait_for_styled("the selection on the seventh row", long, |s| {
        selected_row(s).is_some_and(|r| r.0 == row)
    });
    // Six refreshes: the selection stays on the seventh row whatever it shows. (Sampled
    // until the end: never done early.)
    let mut shown = std::collections::BTreeSet::new();
    let mut settled = 0;
    poll_until(Instant::now() + Duration::from_secs(3), || {
        // Only a settled screen counts: a capture can land in the middle of a redraw (one
        // read `2.561` for `2.56k`, and the highlight a row off), so two captures in a row
        // must agree.
        let styled = tmux.styled_screen();
        if styled != tmux.styled_screen() {
            return None;
        }
        settled += 1;
        let (at, text) =
            selected_row(&styled).unwrap_or_else(|| panic!("no selected row:\n{}", plain(&styled)));
        assert_eq!(at, row, "the selection moved:\n{}", plain(&styled));
        shown.insert(
            text.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        );
        None::<()>
    });
    assert!(settled >= 5, "only {settled} settled screens in 3 s");
    assert!(
        shown.len() > 1,
        "the selected row showed greenlet {shown:?} only: the test saw no row change"
    );

    tmux.keys(&["g"]);
    tmux.wait_for_styled("g: the selection on the first row", long, |s| {
        selected_row(s).is_some_and(|r| r.0 == 0)
    });
}

#[test]
fn detail_of_a_running_hub_shows_its_slice_so_far() {
    if !bpf_and_tmux_or_skip("detail_of_a_running_hub_shows_its_slice_so_far") {
        return;
    }
    let _s = serial();
    let demo = demo(120, &[]);
    let tmux = Tmux::start_sized(
        "running",
        &gltop_cmd(demo.pid(), "-d 0.3 --hit-cost-ns 500"),
        120,
        40,
    );
    let long = Duration::from_secs(30);
    // The busiest greenlet: a hub, current on its thread most of the time.
    tmux.wait_for("the hubs at the top", long, |s| {
        s.lines()
            .skip_while(|l| !l.contains("PARENT"))
            .nth(1)
            .is_some_and(|l| l.contains(" hub "))
    });
    tmux.keys(&["Enter"]);
    // Refreshes (told apart by the header's `attached ... ago`) at which the hub ran.
    let mut seen = std::collections::BTreeMap::new();
    let enough = poll_until(Instant::now() + Duration::from_secs(40), || {
        if seen.len() >= 12 {
            return Some(());
        }
        let screen = tmux.screen();
        let attached = screen
            .lines()
            .next()
            .and_then(|l| l.split("attached ").nth(1))
            .unwrap_or_default()
            .to_string();
        if let Some(line) = screen.lines().find(|l| l.starts_with("running now")) {
            assert!(screen.contains("\"hub\""), "{screen}");
            seen.insert(attached, line.trim().to_string());
        }
        None
    });
    assert!(
        enough.is_some(),
        "the hub was seen running at {} refreshes only: {seen:?}",
        seen.len()
    );
    for line in seen.values() {
        let took = line
            .strip_prefix("running now, for ")
            .unwrap_or_else(|| panic!("{line:?}"));
        assert!(
            took.ends_with('s') && took != "0ns",
            "{line:?} in {seen:#?}"
        );
    }
}

#[test]
fn thread_counts_tell_live_threads_from_those_seen() {
    if !bpf_and_tmux_or_skip("thread_counts_tell_live_threads_from_those_seen") {
        return;
    }
    let _s = serial();
    // Worker threads run greenlets for about two seconds (the first worker of each spins
    // 10 ms in each of its slices), end, and the process lives on with its main thread, which
    // has no greenlets, lingering until its stdin closes.
    let workers = 3;
    let t = target(&[
        "--threads",
        &workers.to_string(),
        "--greenlets",
        "2",
        "--switches",
        "270",
        "--spin-us",
        "10000",
        "--linger",
        "stdin",
    ]);
    let tmux = Tmux::start_sized(
        "threads",
        &gltop_cmd(t.pid(), "-d 0.5 --hit-cost-ns 500"),
        120,
        40,
    );
    let long = Duration::from_secs(30);
    let running = format!(
        "threads {} alive, with greenlets: {workers} now, {workers} since attach",
        workers + 1
    );
    tmux.wait_for(&running, long, |s| s.contains(&running));
    let after = format!("threads 1 alive, with greenlets: 0 now, {workers} since attach");
    tmux.wait_for(&after, long, |s| s.contains(&after));
}

#[test]
fn usdt_mode_measures_the_per_hit_cost() {
    if !bpf_and_tmux_or_skip("usdt_mode_measures_the_per_hit_cost") {
        return;
    }
    let _s = serial();
    let demo = demo(120, &[]);
    let tmux = Tmux::start_sized(
        "usdt",
        &gltop_cmd(demo.pid(), "-d 0.5 --attach usdt"),
        120,
        40,
    );
    let screen = tmux.wait_for("the tracing cost", Duration::from_secs(60), |s| {
        s.contains("tracing cost") && (s.contains("of a CPU") || s.contains("unknown"))
    });
    assert!(screen.contains(" usdt on "), "{screen}");
    let line = screen
        .lines()
        .find(|l| l.contains("tracing cost"))
        .unwrap_or_default();
    let ns: f64 = line
        .split(" × ")
        .nth(1)
        .and_then(|r| r.split("ns").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no per-hit cost in {line:?}"));
    assert!(ns > 0.0, "{line:?}");
}
