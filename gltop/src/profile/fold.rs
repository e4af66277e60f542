//! From sampled stacks to folded stacks, as pure functions: the cut at a greenlet's own
//! bottom frame, one folded line per stack, the merge of counts, the greenlet filter and the
//! frame-pointer verdict. No BPF and no I/O here: [`super::record`] feeds them.
//!
//! Stacks arrive innermost frame first (as `bpf_get_stackid` gives them); a folded line is
//! outermost first: `NAME#ID;outermost;...;innermost COUNT`.

use std::collections::BTreeMap;

/// The symbol of corosensei's first frame on every coroutine stack. A greenlet's frame chain
/// does not end there: corosensei links it on into the stack that resumed the coroutine
/// (`switch_and_link`, `Context::resume`, ... the parent's frames), so a walk by frame
/// pointers goes past it. Everything from this frame outwards belongs to another greenlet.
pub const GREENLET_BOTTOM: &str = "stack_init_trampoline";

/// Whether `frame` (a symbolized frame name) is a greenlet's bottom frame: corosensei's
/// trampoline, whatever path prefix the symbolizer gives it.
pub fn is_greenlet_bottom(frame: &str) -> bool {
    frame == GREENLET_BOTTOM || frame.ends_with(&format!("::{GREENLET_BOTTOM}"))
}

/// The frames of a stack (innermost first) that belong to the greenlet that ran: everything
/// before its bottom frame ([`is_greenlet_bottom`]), which is dropped with all the frames
/// outside it. A stack with no such frame (a thread's main greenlet) is kept whole.
pub fn cut_at_greenlet_bottom<S: AsRef<str>>(frames: &[S]) -> &[S] {
    match frames.iter().position(|f| is_greenlet_bottom(f.as_ref())) {
        Some(bottom) => &frames[..bottom],
        None => frames,
    }
}

/// Text made safe for one frame of a folded line: `;` separates frames and a line ends the
/// record, so both (and every other control character) become `_`.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c == ';' || c.is_control() { '_' } else { c })
        .collect()
}

/// The first frame of a greenlet's lines: `NAME#ID`, or `?#ID` when its name is not known
/// (it was created before the attach) or empty.
pub fn greenlet_frame(name: Option<&str>, id: u64) -> String {
    match name {
        Some(n) if !n.is_empty() => format!("{}#{id}", sanitize(n)),
        _ => format!("?#{id}"),
    }
}

/// The frames of one folded line, without its count: `first;outermost;...;innermost` from
/// a stack given innermost first.
pub fn fold<S: AsRef<str>>(first: &str, innermost_first: &[S]) -> String {
    let mut line = first.to_string();
    for frame in innermost_first.iter().rev() {
        line.push(';');
        line.push_str(&sanitize(frame.as_ref()));
    }
    line
}

/// Which greenlets `--greenlet` keeps: an id, or a name (a number matches either).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreenletFilter(pub String);

impl GreenletFilter {
    /// Whether the greenlet `id`, named `name` (if known), is kept.
    pub fn matches(&self, id: u64, name: Option<&str>) -> bool {
        self.0.parse::<u64>().is_ok_and(|want| want == id) || name == Some(self.0.as_str())
    }
}

/// One sample key's stack, symbolized: who ran it, its frames (innermost first) and how
/// many samples it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    /// The greenlet's id.
    pub greenlet: u64,
    /// Its name, from the `new` probe (None: created before the attach).
    pub name: Option<String>,
    /// Symbolized frames, innermost first, before any cut.
    pub frames: Vec<String>,
    /// Samples.
    pub count: u64,
}

/// Folded stacks: each line's frames and its count, lines merged when they fold the same
/// (two stacks that differ only outside the greenlet's own frames become one line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    lines: BTreeMap<String, u64>,
}

impl Folded {
    /// The folded stacks of `stacks`, each cut at its greenlet's bottom frame, keeping only
    /// the greenlets `filter` keeps (all without one).
    pub fn build(stacks: &[Stack], filter: Option<&GreenletFilter>) -> Folded {
        let mut folded = Folded::default();
        for s in stacks {
            if filter.is_some_and(|f| !f.matches(s.greenlet, s.name.as_deref())) {
                continue;
            }
            let first = greenlet_frame(s.name.as_deref(), s.greenlet);
            folded.add(fold(&first, cut_at_greenlet_bottom(&s.frames)), s.count);
        }
        folded
    }

    /// Adds `count` samples to the line `frames`.
    pub fn add(&mut self, frames: String, count: u64) {
        if count > 0 {
            *self.lines.entry(frames).or_default() += count;
        }
    }

    /// Whether no sample is kept.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Samples over all lines.
    pub fn samples(&self) -> u64 {
        self.lines.values().sum()
    }

    /// Number of distinct lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// The lines, `FRAMES COUNT`, sorted by their frames (as flame graph tools expect), each
    /// ending with a newline.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (frames, count) in &self.lines {
            out.push_str(frames);
            out.push(' ');
            out.push_str(&count.to_string());
            out.push('\n');
        }
        out
    }

    /// The lines without their newlines, for a flame graph writer.
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().map(|(f, c)| format!("{f} {c}")).collect()
    }
}

/// What a stack (before the cut) says about frame pointers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawShape {
    /// Frames the kernel's walk found.
    pub depth: usize,
    /// Frames after the first that are in no executable mapping of the target: garbage
    /// return addresses, read from a frame pointer that is not one.
    pub stray: usize,
    /// Whether the walk went through a greenlet's bottom frame ([`is_greenlet_bottom`]).
    pub through_bottom: bool,
    /// Samples with this stack.
    pub count: u64,
}

/// Fewer samples than this say nothing about frame pointers.
pub const FRAME_POINTER_MIN_SAMPLES: u64 = 20;

/// A walk shorter than this that never reached a greenlet's bottom frame did not get from
/// the sampled function to a thread's start either: with frame pointers, the Rust runtime's
/// own frames from a thread's start routine to `main` or to a thread's closure are more.
pub const SHORT_WALK: usize = 6;

/// Whether one stack looks walked without frame pointers: at most two frames, return
/// addresses outside the target's code, or a short walk that never reached a greenlet's
/// bottom frame. Without frame pointers the walk jumps from the sampled function straight
/// to whatever frame record corosensei or libc left in the frame-pointer register, skipping
/// every Rust frame between: a few frames, and no trampoline.
pub fn looks_unwalkable(s: &RawShape) -> bool {
    s.depth <= 2 || s.stray > 0 || (!s.through_bottom && s.depth < SHORT_WALK)
}

/// Whether the target looks built without frame pointers: most of its samples (more than
/// half, out of at least [`FRAME_POINTER_MIN_SAMPLES`]) have stacks that
/// [`looks_unwalkable`]. With frame pointers, a greenlet's stack runs from corosensei's
/// trampoline to the sampled function and a thread's main greenlet's from its start routine:
/// both many frames, all in the target's code.
pub fn lacks_frame_pointers(shapes: &[RawShape]) -> bool {
    let total: u64 = shapes.iter().map(|s| s.count).sum();
    let bad: u64 = shapes
        .iter()
        .filter(|s| looks_unwalkable(s))
        .map(|s| s.count)
        .sum();
    total >= FRAME_POINTER_MIN_SAMPLES && bad * 2 > total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(greenlet: u64, name: Option<&str>, frames: &[&str], count: u64) -> Stack {
        Stack {
            greenlet,
            name: name.map(str::to_string),
            frames: frames.iter().map(|f| f.to_string()).collect(),
            count,
        }
    }

    /// A greenlet's stack as a frame-pointer walk sees it: its own frames, the trampoline,
    /// then the hub's.
    const HOG: &[&str] = &[
        "demo::spin",
        "demo::hog::{{closure}}",
        "greenlet::Greenlet::start",
        "corosensei::arch::x86_64::stack_init_trampoline",
        "corosensei::arch::x86_64::switch_and_link",
        "greenlet::Greenlet::switch",
        "demo::hub_loop",
        "corosensei::arch::x86_64::stack_init_trampoline",
        "std::rt::lang_start",
        "main",
    ];

    #[test]
    fn the_cut_keeps_the_greenlets_own_frames() {
        assert_eq!(
            cut_at_greenlet_bottom(HOG),
            &[
                "demo::spin",
                "demo::hog::{{closure}}",
                "greenlet::Greenlet::start"
            ]
        );
        // The innermost trampoline is the greenlet's own bottom, even with more outside.
        assert_eq!(cut_at_greenlet_bottom(&HOG[4..]), &HOG[4..7]);
        // A main greenlet's stack has none: kept whole.
        assert_eq!(cut_at_greenlet_bottom(&HOG[8..]), &HOG[8..]);
        assert!(cut_at_greenlet_bottom::<&str>(&[]).is_empty());
        // Sampled in the trampoline itself: nothing of the greenlet's own is left.
        assert!(cut_at_greenlet_bottom(&HOG[3..]).is_empty());
    }

    #[test]
    fn the_bottom_is_the_trampoline_by_any_path() {
        assert!(is_greenlet_bottom("stack_init_trampoline"));
        assert!(is_greenlet_bottom(
            "corosensei::arch::x86_64::stack_init_trampoline"
        ));
        assert!(!is_greenlet_bottom("my_stack_init_trampoline"));
        assert!(!is_greenlet_bottom("stack_init_trampoline::helper"));
        assert!(!is_greenlet_bottom(
            "corosensei::arch::x86_64::switch_and_link"
        ));
    }

    #[test]
    fn a_line_runs_from_the_greenlet_to_the_innermost_frame() {
        assert_eq!(
            fold("cpu-hog#3", &["inner", "middle", "outer"]),
            "cpu-hog#3;outer;middle;inner"
        );
        assert_eq!(fold::<&str>("?#9", &[]), "?#9");
        assert_eq!(greenlet_frame(Some("cpu-hog"), 3), "cpu-hog#3");
        assert_eq!(greenlet_frame(None, 3), "?#3");
        assert_eq!(greenlet_frame(Some(""), 3), "?#3");
        // Separators and line ends in a name or a frame cannot break the format.
        assert_eq!(greenlet_frame(Some("a;b\nc"), 1), "a_b_c#1");
        assert_eq!(fold("x#1", &["f;g"]), "x#1;f_g");
        // Spaces are kept: the count is after the last one.
        assert_eq!(
            fold("x#1", &["<T as core::ops::Fn>::call"]),
            "x#1;<T as core::ops::Fn>::call"
        );
    }

    #[test]
    fn counts_merge_when_lines_fold_the_same() {
        let other_parent = [&HOG[..4], &["somewhere::else", "main"]].concat();
        let stacks = [
            stack(3, Some("cpu-hog"), HOG, 5),
            stack(3, Some("cpu-hog"), &other_parent, 2),
            stack(1, None, &HOG[8..], 4),
            stack(7, Some("conn-0-1"), &HOG[1..], 0),
        ];
        let folded = Folded::build(&stacks, None);
        assert_eq!(
            folded.text(),
            "?#1;main;std::rt::lang_start 4\n\
             cpu-hog#3;greenlet::Greenlet::start;demo::hog::{{closure}};demo::spin 7\n"
        );
        assert_eq!(folded.samples(), 11);
        assert_eq!(folded.len(), 2);
        assert_eq!(
            folded.lines()[1],
            "cpu-hog#3;greenlet::Greenlet::start;demo::hog::{{closure}};demo::spin 7"
        );
        // No hub frame above the hog's, as the issue asks.
        assert!(!folded
            .text()
            .lines()
            .any(|l| l.starts_with("cpu-hog#") && l.contains("hub_loop")));
    }

    #[test]
    fn the_filter_keeps_one_greenlet_by_id_or_name() {
        let stacks = [
            stack(3, Some("cpu-hog"), HOG, 5),
            stack(4, Some("hub"), &HOG[4..], 2),
            stack(12, None, &HOG[8..], 1),
            stack(5, Some("12"), &HOG[8..], 1),
        ];
        let by_name = Folded::build(&stacks, Some(&GreenletFilter("cpu-hog".into())));
        assert_eq!(by_name.samples(), 5);
        assert!(by_name.text().lines().all(|l| l.starts_with("cpu-hog#3;")));
        let by_id = Folded::build(&stacks, Some(&GreenletFilter("4".into())));
        assert_eq!(by_id.text(), "hub#4;demo::hub_loop;greenlet::Greenlet::switch;corosensei::arch::x86_64::switch_and_link 2\n");
        // A number matches an id and a name alike.
        let both = Folded::build(&stacks, Some(&GreenletFilter("12".into())));
        assert_eq!(both.samples(), 2);
        assert!(Folded::build(&stacks, Some(&GreenletFilter("nobody".into()))).is_empty());
    }

    fn shape(depth: usize, stray: usize, count: u64) -> RawShape {
        RawShape {
            depth,
            stray,
            through_bottom: depth >= 4,
            count,
        }
    }

    #[test]
    fn shallow_or_stray_stacks_mean_no_frame_pointers() {
        // Deep stacks in the target's code: frame pointers.
        assert!(!lacks_frame_pointers(&[shape(9, 0, 100), shape(1, 0, 10)]));
        // Mostly one frame deep.
        assert!(lacks_frame_pointers(&[shape(1, 0, 80), shape(6, 0, 20)]));
        // Deep, but through garbage return addresses.
        assert!(lacks_frame_pointers(&[
            shape(5, 3, 60),
            shape(2, 0, 10),
            shape(8, 0, 30)
        ]));
        // Exactly half is not most.
        assert!(!lacks_frame_pointers(&[shape(1, 0, 50), shape(6, 0, 50)]));
        // Too few samples to say.
        assert!(!lacks_frame_pointers(&[shape(1, 0, 19)]));
        assert!(!lacks_frame_pointers(&[]));
    }

    #[test]
    fn short_walks_that_miss_the_trampoline_mean_no_frame_pointers() {
        // As measured on the demo built without frame pointers: the sampled function, then
        // corosensei's and libc's frame records, four or five frames, no trampoline.
        let skipped = RawShape {
            depth: 4,
            stray: 0,
            through_bottom: false,
            count: 90,
        };
        assert!(looks_unwalkable(&skipped));
        assert!(lacks_frame_pointers(&[skipped]));
        // Through the trampoline, however short: walked.
        let greenlet = RawShape {
            through_bottom: true,
            ..skipped
        };
        assert!(!looks_unwalkable(&greenlet));
        assert!(!lacks_frame_pointers(&[greenlet]));
        // A main greenlet's long walk to its thread's start: walked.
        let main = RawShape {
            depth: 12,
            ..skipped
        };
        assert!(!looks_unwalkable(&main));
    }
}
