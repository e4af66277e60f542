//! `gltop record`: per-greenlet CPU profiles by sampling.
//!
//! [`record::record`] samples the target's user stacks on every CPU with the software
//! `cpu-clock` event and keys them by the greenlet that ran (read from the runtime's
//! published layout, `bpf/sample.h`); [`fold`] cuts each stack at its greenlet's own bottom
//! frame and folds it; [`write_svg`] draws a flame graph of the folded stacks.

pub mod fold;
pub mod record;
mod skel;

use std::io;

pub use fold::{Folded, GreenletFilter, Stack};
pub use record::{record, Ending, Lost, Options, Recording};

use crate::loader::layout::LayoutError;

/// Why a recording failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Finding the process, checking privileges, reading its probes or loading BPF failed.
    #[error("{0}")]
    Loader(#[from] crate::loader::Error),
    /// The target publishes no (usable) sample layout.
    #[error("{0}")]
    Layout(#[from] LayoutError),
    /// The cpu-clock perf event could not be opened.
    #[error("cannot open the cpu-clock perf event on CPU {cpu}: {source}")]
    PerfEvent {
        /// The CPU.
        cpu: usize,
        /// The failure.
        source: io::Error,
    },
    /// Another I/O failure.
    #[error("{action}: {source}")]
    Io {
        /// What was attempted.
        action: String,
        /// The failure.
        source: io::Error,
    },
}

/// Writes the SVG flame graph of `folded` (inferno), titled `title`.
pub fn write_svg(folded: &Folded, title: &str, out: impl io::Write) -> io::Result<()> {
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    opts.count_name = "samples".to_string();
    let lines = folded.lines();
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_svg_names_the_frames() {
        let mut folded = Folded::default();
        folded.add("cpu-hog#3;demo::hog;demo::spin".into(), 90);
        folded.add("hub#2;demo::hub_loop".into(), 10);
        let mut svg = Vec::new();
        write_svg(&folded, "a title", &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.starts_with("<?xml"), "{}", &svg[..100.min(svg.len())]);
        for word in ["demo::spin", "cpu-hog#3", "hub#2", "a title"] {
            assert!(svg.contains(word), "{word} not in the SVG");
        }
    }
}
