//! Where a Python process keeps its current greenlet, read from the outside (issue 18): the
//! `_greenlet*.so` that `/proc/PID/maps` shows, its TLS symbol, `PyGreenlet_Type`, and the
//! offsets of greenlet's `ThreadState` and of CPython's object header, from the .so's own
//! symbols and DWARF (the `object` and `gimli` crates). Nothing is assumed that the module
//! does not say: a missing symbol or member is a refusal that names it.
//!
//! The reading itself is in `bpf/pysample.bpf.c`: through glibc's DTV to the module's TLS
//! block, then `ThreadStateCreator::_state` -> `ThreadState::current_greenlet`.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment, ObjectSymbol};

use super::dwarf::{self, Wanted};
use super::pymodule::{self, Mapping, ModuleKind};

/// greenlet's per-thread state: a C++ `thread_local` of `_greenlet*.so` (greenlet 3.x).
pub const TLS_SYMBOL: &str = "_ZL21g_thread_state_global";
/// The type of every greenlet object (subclasses have their own, whose main greenlet is of it).
pub const TYPE_SYMBOL: &str = "PyGreenlet_Type";
/// The greenlet versions this layout was checked on.
pub const CHECKED_VERSIONS: &str = "greenlet 3.x (checked: 3.0.3, 3.5.6)";

/// What the sampler needs to find a thread's current greenlet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyGreenletLayout {
    /// The module, as mapped (path in the target's mount namespace).
    pub module: PathBuf,
    /// greenlet's version, from the `greenlet-X.dist-info` beside it (if there is one).
    pub version: Option<String>,
    /// CPython's version tag of the module (`cpython-311`), if its name has one.
    pub python: Option<String>,
    /// Offset of the `ThreadState*` within the module's TLS block: the symbol's value plus
    /// `ThreadStateCreator::_state`.
    pub tls_offset: u64,
    /// Run-time address of `PyGreenlet_Type` in the target.
    pub type_addr: u64,
    /// `ThreadState::main_greenlet` and `ThreadState::current_greenlet`.
    pub state_main: u32,
    /// See `state_main`.
    pub state_current: u32,
    /// `PyObject::ob_type` and `PyTypeObject::tp_name`.
    pub ob_type: u32,
    /// See `ob_type`.
    pub tp_name: u32,
}

/// Why a process cannot be sampled as a Python greenlet process.
#[derive(Debug, thiserror::Error)]
pub enum PyLookupError {
    /// A Python process that has not imported greenlet.
    #[error("it is a Python process without greenlet (no _greenlet*.so is loaded)")]
    NoGreenlet,
    /// greenlet is loaded, but keeps no thread-local state this gltop can read.
    #[error(
        "greenlet {version} ({path}) is too old: it has no {TLS_SYMBOL} thread-local; sampling works with {CHECKED_VERSIONS}"
    )]
    TooOld {
        /// The module.
        path: PathBuf,
        /// Its version, or `unknown`.
        version: String,
    },
    /// Something this reading needs is not in the module.
    #[error("{path} has no {what}: cannot find the current greenlet without it (works with {CHECKED_VERSIONS}, not stripped)")]
    Missing {
        /// The module.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// The process's C library is musl: there is no glibc DTV to read.
    #[error(
        "it uses musl libc: Python greenlets are sampled through glibc's thread-local storage only"
    )]
    Musl,
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The module is not an ELF file this reader understands.
    #[error("cannot parse {path}: {reason}")]
    BadElf {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What a process's mappings say: `Ok(None)` not Python, `Ok(Some(module path))` Python with
/// greenlet (2.0 or later) loaded, or why it cannot be sampled (the version of a too-old
/// module is filled in by the caller, which knows where the target's files are).
fn classify<'a>(exe: &str, mapped: &'a [Mapping]) -> Result<Option<&'a str>, PyLookupError> {
    let module = pymodule::greenlet_module(mapped);
    if module.is_none() && !pymodule::is_python(exe, mapped) {
        return Ok(None);
    }
    if pymodule::is_musl(mapped) {
        return Err(PyLookupError::Musl);
    }
    match module {
        Some((path, ModuleKind::Current)) => Ok(Some(path)),
        Some((path, ModuleKind::Old)) => Err(PyLookupError::TooOld {
            path: path.into(),
            version: "1.x".into(),
        }),
        None => Err(PyLookupError::NoGreenlet),
    }
}

/// The Python greenlet layout of process `pid`: `Ok(None)` when it is not a Python process
/// at all (the caller tries the Rust runtime's sampler), an error when it is one that cannot
/// be sampled.
pub fn detect(pid: i32) -> Result<Option<PyGreenletLayout>, PyLookupError> {
    let mapped = pymodule::mappings(pid).map_err(|source| PyLookupError::Io {
        path: format!("/proc/{pid}/maps").into(),
        source,
    })?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let classified = classify(&exe, &mapped).map_err(|e| match e {
        PyLookupError::TooOld { path, version } => PyLookupError::TooOld {
            version: pymodule::greenlet_version(&pymodule::from_here(pid, &path.to_string_lossy()))
                .unwrap_or(version),
            path,
        },
        e => e,
    })?;
    let Some(path) = classified else {
        return Ok(None);
    };
    let start = pymodule::load_address(&mapped, path).ok_or_else(|| PyLookupError::Missing {
        path: path.into(),
        what: "mapping of its first page".into(),
    })?;
    let on_disk = pymodule::from_here(pid, path);
    let data = std::fs::read(&on_disk).map_err(|source| PyLookupError::Io {
        path: on_disk.clone(),
        source,
    })?;
    let version = pymodule::greenlet_version(&on_disk);
    match layout_of(Path::new(path), &data, start) {
        Ok(layout) => Ok(Some(PyGreenletLayout { version, ..layout })),
        Err(PyLookupError::TooOld { path, .. }) => Err(PyLookupError::TooOld {
            path,
            version: version.unwrap_or_else(|| "(version unknown)".into()),
        }),
        Err(e) => Err(e),
    }
}

/// The layout of greenlet module `data` (mapped at `path`, its file offset 0 at `start`).
pub fn layout_of(path: &Path, data: &[u8], start: u64) -> Result<PyGreenletLayout, PyLookupError> {
    let bad = |reason: String| PyLookupError::BadElf {
        path: path.into(),
        reason,
    };
    let missing = |what: &str| PyLookupError::Missing {
        path: path.into(),
        what: what.into(),
    };
    let file = object::File::parse(data).map_err(|e| bad(e.to_string()))?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(bad("not an x86-64 module".into()));
    }
    let first = file
        .segments()
        .find(|s| s.file_range().0 == 0)
        .ok_or_else(|| missing("segment at file offset 0"))?;
    let bias = start.wrapping_sub(first.address());
    let symbol = |name: &str| {
        file.symbols()
            .chain(file.dynamic_symbols())
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
    };
    let type_addr = symbol(TYPE_SYMBOL).ok_or_else(|| missing(&format!("symbol {TYPE_SYMBOL}")))?;
    let Some(tls) = symbol(TLS_SYMBOL) else {
        // greenlet 1.x is C with no thread-local state object; 2.x keeps it another way.
        return Err(PyLookupError::TooOld {
            path: path.into(),
            version: "(version unknown)".into(),
        });
    };
    let dwarf = dwarf::load(&file).map_err(|e| bad(format!("DWARF: {e}")))?;
    let wanted = [
        Wanted {
            name: "ThreadStateCreator<",
            prefix: true,
            members: &["_state"],
        },
        Wanted::named("ThreadState", &["main_greenlet", "current_greenlet"]),
        Wanted::named("_object", &["ob_type"]),
        Wanted::named("_typeobject", &["tp_name"]),
    ];
    let found = dwarf::structs(&dwarf, &wanted).map_err(|e| bad(format!("DWARF: {e}")))?;
    let offset = |i: usize, member: &str| {
        let w = &wanted[i];
        found[i]
            .as_ref()
            .and_then(|s| s.offset(member))
            .ok_or_else(|| {
                missing(&format!(
                    "DWARF type {}{}",
                    w.name,
                    if w.prefix { "...>" } else { "" }
                ))
            })
    };
    let state = offset(0, "_state")?;
    let (main, current) = (offset(1, "main_greenlet")?, offset(1, "current_greenlet")?);
    let (ob_type, tp_name) = (offset(2, "ob_type")?, offset(3, "tp_name")?);
    let narrow = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| bad(format!("{what} offset {v} is out of range")))
    };
    Ok(PyGreenletLayout {
        module: path.into(),
        version: None,
        python: python_tag(pymodule::file_name(&path.to_string_lossy())),
        tls_offset: tls + state,
        type_addr: bias.wrapping_add(type_addr),
        state_main: narrow(main, "main_greenlet")?,
        state_current: narrow(current, "current_greenlet")?,
        ob_type: narrow(ob_type, "ob_type")?,
        tp_name: narrow(tp_name, "tp_name")?,
    })
}

/// CPython's tag in an extension module's name: `cpython-311` of
/// `_greenlet.cpython-311-x86_64-linux-gnu.so`.
fn python_tag(name: &str) -> Option<String> {
    let part = name.split('.').find(|p| p.starts_with("cpython-"))?;
    let digits = part["cpython-".len()..].split('-').next()?;
    Some(format!("cpython-{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_tags_come_from_the_module_name() {
        assert_eq!(
            python_tag("_greenlet.cpython-313-x86_64-linux-gnu.so").as_deref(),
            Some("cpython-313")
        );
        assert_eq!(python_tag("_greenlet.abi3.so"), None);
    }

    #[test]
    fn a_process_is_rust_python_with_greenlet_python_without_or_musl() {
        let map = |paths: &[&str]| -> Vec<Mapping> {
            paths
                .iter()
                .map(|p| Mapping {
                    start: 0,
                    offset: 0,
                    path: p.to_string(),
                })
                .collect()
        };
        let glibc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
        let module = "/site/greenlet/_greenlet.cpython-311-x86_64-linux-gnu.so";
        assert!(matches!(classify("/bin/demo", &map(&[glibc])), Ok(None)));
        let m = map(&[glibc, module]);
        assert_eq!(classify("/usr/bin/python3.11", &m).unwrap(), Some(module));
        assert!(matches!(
            classify("/usr/bin/python3.11", &map(&[glibc])),
            Err(PyLookupError::NoGreenlet)
        ));
        let musl = map(&["/lib/ld-musl-x86_64.so.1", module]);
        let e = classify("/usr/bin/python3", &musl).unwrap_err();
        assert!(matches!(e, PyLookupError::Musl));
        assert!(e.to_string().contains("musl"), "{e}");
    }
}
