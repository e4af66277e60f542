//! Where CPython keeps a thread's Python frames, for per-greenlet Python stacks (issue 18,
//! `gltop record`): from `_Py_DebugOffsets` at the start of `_PyRuntime` on 3.13 (read from
//! the process: no DWARF needed), and from libpython's DWARF on 3.11 and 3.12. A version or a
//! build where an offset cannot be found is refused, saying which and what is missing.
//!
//! [`PyFrameOffsets::read_name`] turns a code object's address into its qualified name by
//! reading the target's memory.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment, ObjectSymbol};

use super::dwarf::{self, Wanted};
use super::pymodule::{self, file_name};

/// `bpf/pysample.h`'s `PG_NONE`: no such field (3.11 frames have no owner; 3.13 no cframe).
pub const NONE: u32 = u32::MAX;
/// `FRAME_OWNED_BY_CSTACK` (3.12, 3.13): an entry frame of the C stack, not Python code.
const OWNED_BY_CSTACK: u32 = 3;

/// The offsets the BPF frame walk and the name reader need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyFrameOffsets {
    /// CPython's version, `3.13`.
    pub version: String,
    /// Where they came from (`_Py_DebugOffsets`, or the DWARF file).
    pub source: String,
    /// Run-time address of `_PyRuntime`.
    pub runtime: u64,
    /// `_PyRuntime.interpreters.head`.
    pub interp_head: u32,
    /// `PyInterpreterState.threads.head`.
    pub threads_head: u32,
    /// `PyThreadState.next`, `.native_thread_id`.
    pub ts_next: u32,
    /// See `ts_next`.
    pub ts_native_tid: u32,
    /// `PyThreadState.current_frame` (3.13) or `.cframe` (3.11, 3.12).
    pub ts_frame: u32,
    /// `_PyCFrame.current_frame`, or [`NONE`].
    pub cframe_current: u32,
    /// `_PyInterpreterFrame.f_code` / `f_executable`, `.previous`, `.owner` (or [`NONE`]).
    pub fr_code: u32,
    /// See `fr_code`.
    pub fr_previous: u32,
    /// See `fr_code`.
    pub fr_owner: u32,
    /// The owner value of C-stack entry frames.
    pub owner_cstack: u32,
    /// `PyCodeObject.co_qualname`.
    pub co_qualname: u32,
    /// `PyASCIIObject.length`, `.state`, and its size (where a compact ASCII string's text is).
    pub str_length: u32,
    /// See `str_length`.
    pub str_state: u32,
    /// See `str_length`.
    pub ascii_size: u32,
}

/// Why a process's Python frames cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FramesError {
    /// No CPython runtime found in the process.
    #[error("no _PyRuntime in the process's executable or libpython")]
    NoRuntime,
    /// A version this reader does not know.
    #[error(
        "CPython {0}: its frames are read on 3.11, 3.12 (DWARF) and 3.13 (_Py_DebugOffsets) only"
    )]
    Version(String),
    /// Something needed is missing.
    #[error("CPython {version} ({path}): no {what}")]
    Missing {
        /// CPython's version.
        version: String,
        /// The file looked in.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// The process's memory or a file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// What.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// `3.11` from `libpython3.11.so.1.0` or `python3.11`.
fn version_of(name: &str) -> Option<String> {
    let rest = name
        .strip_prefix("libpython")
        .or_else(|| name.strip_prefix("python"))?;
    let v: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v = v.trim_end_matches('.');
    let mut parts = v.split('.');
    let (major, minor) = (parts.next()?, parts.next()?);
    Some(format!("{major}.{minor}"))
}

impl PyFrameOffsets {
    /// The offsets of process `pid`'s CPython.
    pub fn find(pid: i32) -> Result<PyFrameOffsets, FramesError> {
        let maps = pymodule::mappings(pid).map_err(|e| FramesError::Read {
            path: format!("/proc/{pid}/maps").into(),
            reason: e.to_string(),
        })?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // libpython first (a shared build keeps the runtime there), then the executable.
        let mut candidates: Vec<&String> = maps
            .iter()
            .map(|m| &m.path)
            .filter(|p| file_name(p).starts_with("libpython3"))
            .collect();
        candidates.dedup();
        if let Some(m) = maps.iter().find(|m| m.path == exe) {
            candidates.push(&m.path);
        }
        let mem_path = PathBuf::from(format!("/proc/{pid}/mem"));
        let mem = std::fs::File::open(&mem_path).map_err(|e| FramesError::Read {
            path: mem_path.clone(),
            reason: e.to_string(),
        })?;
        for path in candidates {
            let on_disk = pymodule::from_here(pid, path);
            let Ok(data) = std::fs::read(&on_disk) else {
                continue;
            };
            let Ok(file) = object::File::parse(&*data) else {
                continue;
            };
            let Some(value) = file
                .dynamic_symbols()
                .chain(file.symbols())
                .find(|s| s.name() == Ok("_PyRuntime"))
                .map(|s| s.address())
            else {
                continue;
            };
            let Some(start) = pymodule::load_address(&maps, path) else {
                continue;
            };
            let Some(first) = file.segments().find(|s| s.file_range().0 == 0) else {
                continue;
            };
            let runtime = start.wrapping_sub(first.address()).wrapping_add(value);
            let version = version_of(file_name(path))
                .or_else(|| version_of(file_name(&exe)))
                .unwrap_or_else(|| "(version unknown)".into());
            let mut head = [0u8; 8 * DEBUG_WORDS];
            mem.read_exact_at(&mut head, runtime)
                .map_err(|e| FramesError::Read {
                    path: mem_path.clone(),
                    reason: format!("_PyRuntime at {runtime:#x}: {e}"),
                })?;
            if &head[..8] == b"xdebugpy" {
                return from_debug_offsets(&head, runtime);
            }
            return match version.as_str() {
                "3.11" | "3.12" => from_dwarf(Path::new(path), &file, &version, runtime),
                _ => Err(FramesError::Version(version)),
            };
        }
        Err(FramesError::NoRuntime)
    }

    /// The qualified name of the code object at `code` in the target (`mem` is its
    /// `/proc/PID/mem`); `None` if it cannot be read or is not compact ASCII.
    pub fn read_name(&self, mem: &std::fs::File, code: u64) -> Option<String> {
        let word = |addr: u64| -> Option<u64> {
            let mut b = [0u8; 8];
            mem.read_exact_at(&mut b, addr).ok()?;
            Some(u64::from_ne_bytes(b))
        };
        let s = word(code + u64::from(self.co_qualname))?;
        let length = word(s + u64::from(self.str_length))?;
        let mut st = [0u8; 4];
        mem.read_exact_at(&mut st, s + u64::from(self.str_state))
            .ok()?;
        let state = u32::from_ne_bytes(st);
        // Bits: interned (2), kind (3), compact (1), ascii (1).
        let (compact, ascii) = (state >> 5 & 1, state >> 6 & 1);
        if compact == 0 || ascii == 0 || length > 1024 {
            return None;
        }
        let mut text = vec![0u8; length as usize];
        mem.read_exact_at(&mut text, s + u64::from(self.ascii_size))
            .ok()?;
        String::from_utf8(text).ok()
    }
}

/// Words of `_Py_DebugOffsets` read (3.13 has 71).
const DEBUG_WORDS: usize = 72;

/// 3.13's `_Py_DebugOffsets` (Include/internal/pycore_runtime.h of 3.13): u64 fields in
/// blocks that each start with the size of their struct.
fn from_debug_offsets(head: &[u8], runtime: u64) -> Result<PyFrameOffsets, FramesError> {
    let at = |i: usize| u64::from_ne_bytes(head[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    let hex = at(1);
    let version = format!("{}.{}", hex >> 24 & 0xff, hex >> 16 & 0xff);
    if version != "3.13" {
        return Err(FramesError::Version(version));
    }
    // Word indices: cookie 0, version 1, free_threaded 2; runtime_state 3..=5;
    // interpreter_state 6..=18; thread_state 19..=27; interpreter_frame 28..=33;
    // code_object 34..=43; pyobject 44..=45; type_object 46..=49; tuple 50..=52;
    // list 53..=55; dict 56..=58; float 59..=60; long 61..=63; bytes 64..=66;
    // unicode 67..=70.
    let narrow = |i: usize| u32::try_from(at(i)).unwrap_or(NONE);
    Ok(PyFrameOffsets {
        version,
        source: "_Py_DebugOffsets".into(),
        runtime,
        interp_head: narrow(5),
        threads_head: narrow(9),
        ts_next: narrow(21),
        ts_native_tid: narrow(25),
        ts_frame: narrow(23),
        cframe_current: NONE,
        fr_code: narrow(30),
        fr_previous: narrow(29),
        fr_owner: narrow(33),
        owner_cstack: OWNED_BY_CSTACK,
        co_qualname: narrow(37),
        str_state: narrow(68),
        str_length: narrow(69),
        ascii_size: narrow(70),
    })
}

/// 3.11 and 3.12, from the DWARF of the file that holds `_PyRuntime`.
fn from_dwarf(
    path: &Path,
    file: &object::File<'_>,
    version: &str,
    runtime: u64,
) -> Result<PyFrameOffsets, FramesError> {
    let missing = |what: String| FramesError::Missing {
        version: version.into(),
        path: path.into(),
        what,
    };
    if file.section_by_name(".debug_info").is_none() {
        return Err(missing(
            "DWARF (.debug_info): stripped; frames before 3.13 need libpython's debug information"
                .into(),
        ));
    }
    let dwarf = dwarf::load(file).map_err(|e| missing(format!("readable DWARF ({e})")))?;
    // Each struct with the members read below (`owner` is optional: 3.12 only).
    let wanted = [
        Wanted::named("pyruntimestate", &["interpreters"]),
        Wanted::named("pyinterpreters", &["head"]),
        Wanted::named("_is", &["threads"]),
        Wanted::named("pythreads", &["head"]),
        Wanted::named("_ts", &["next", "native_thread_id", "cframe"]),
        Wanted::named("_PyCFrame", &["current_frame"]),
        Wanted::named("_PyInterpreterFrame", &["f_code", "previous"]),
        Wanted::named("PyCodeObject", &["co_qualname"]),
        Wanted::named("PyASCIIObject", &["length", "state"]),
    ];
    let found =
        dwarf::structs(&dwarf, &wanted).map_err(|e| missing(format!("readable DWARF ({e})")))?;
    let get = |st: &str| {
        wanted
            .iter()
            .position(|w| w.name == st)
            .and_then(|i| found[i].as_ref())
    };
    let member = |st: &str, m: &str| -> Result<u32, FramesError> {
        get(st)
            .and_then(|i| i.offset(m))
            .and_then(|o| u32::try_from(o).ok())
            .ok_or_else(|| missing(format!("DWARF member {st}.{m}")))
    };
    let ascii = get("PyASCIIObject")
        .map(|i| i.size)
        .filter(|&n| n > 0)
        .ok_or_else(|| missing("DWARF type PyASCIIObject".into()))?;
    Ok(PyFrameOffsets {
        version: version.into(),
        source: path.display().to_string(),
        runtime,
        interp_head: member("pyruntimestate", "interpreters")? + member("pyinterpreters", "head")?,
        threads_head: member("_is", "threads")? + member("pythreads", "head")?,
        ts_next: member("_ts", "next")?,
        ts_native_tid: member("_ts", "native_thread_id")?,
        ts_frame: member("_ts", "cframe")?,
        cframe_current: member("_PyCFrame", "current_frame")?,
        fr_code: member("_PyInterpreterFrame", "f_code")?,
        fr_previous: member("_PyInterpreterFrame", "previous")?,
        fr_owner: member("_PyInterpreterFrame", "owner").unwrap_or(NONE),
        owner_cstack: OWNED_BY_CSTACK,
        co_qualname: member("PyCodeObject", "co_qualname")?,
        str_length: member("PyASCIIObject", "length")?,
        str_state: member("PyASCIIObject", "state")?,
        ascii_size: u32::try_from(ascii).unwrap_or(NONE),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_file_names() {
        assert_eq!(version_of("libpython3.11.so.1.0").as_deref(), Some("3.11"));
        assert_eq!(version_of("python3.13").as_deref(), Some("3.13"));
        assert_eq!(version_of("python3"), None);
        assert_eq!(version_of("uwsgi"), None);
    }

    /// `_Py_DebugOffsets` with word i holding 1000 + i, after the cookie and `version`.
    fn debug_offsets(version: u64) -> Vec<u8> {
        let mut b = b"xdebugpy".to_vec();
        b.extend_from_slice(&version.to_ne_bytes());
        for i in 2..DEBUG_WORDS as u64 {
            b.extend_from_slice(&(1000 + i).to_ne_bytes());
        }
        b
    }

    #[test]
    fn debug_offsets_of_3_13_are_read_by_their_place_and_others_refused() {
        let o = from_debug_offsets(&debug_offsets(0x030D_00F0), 0x7000).unwrap();
        assert_eq!(o.version, "3.13");
        assert_eq!(
            (
                o.interp_head,
                o.threads_head,
                o.ts_next,
                o.ts_frame,
                o.ts_native_tid
            ),
            (1005, 1009, 1021, 1023, 1025)
        );
        assert_eq!((o.fr_previous, o.fr_code, o.fr_owner), (1029, 1030, 1033));
        assert_eq!(o.co_qualname, 1037);
        assert_eq!(
            (o.str_state, o.str_length, o.ascii_size),
            (1068, 1069, 1070)
        );
        assert_eq!(o.cframe_current, NONE);
        let e = from_debug_offsets(&debug_offsets(0x030E_00A1), 0x7000).unwrap_err();
        assert!(e.to_string().contains("CPython 3.14"), "{e}");
    }
}
