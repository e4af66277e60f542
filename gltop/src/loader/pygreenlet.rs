//! Where a Python process keeps its current greenlet, read from the outside (issue 18): the
//! `_greenlet*.so` that `/proc/PID/maps` shows, its TLS symbol, `PyGreenlet_Type`, and the
//! offsets of greenlet's `ThreadState` and of CPython's object header, from the .so's own
//! symbols and DWARF (the `object` and `gimli` crates). Nothing is assumed that the module
//! does not say: a missing symbol or member is a refusal that names it.
//!
//! The reading itself is in `bpf/pysample.bpf.c`: through glibc's DTV to the module's TLS
//! block, then `ThreadStateCreator::_state` -> `ThreadState::current_greenlet`.

use std::path::{Path, PathBuf};

use gimli::{EndianSlice, LittleEndian};
use object::{Object, ObjectSegment, ObjectSymbol};

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

/// One line of `/proc/PID/maps` that maps a file: (start, file offset, path).
fn file_mappings(maps: &str) -> Vec<(u64, u64, String)> {
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let _perms = f.next()?;
            let offset = u64::from_str_radix(f.next()?, 16).ok()?;
            let _dev = f.next()?;
            let _inode = f.next()?;
            let path: Vec<&str> = f.collect();
            let path = path.join(" ");
            if !path.starts_with('/') {
                return None;
            }
            let start = u64::from_str_radix(range.split('-').next()?, 16).ok()?;
            Some((start, offset, path))
        })
        .collect()
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether a mapped file is greenlet's extension module.
fn is_greenlet_module(path: &str) -> bool {
    let name = file_name(path);
    name.starts_with("_greenlet") && name.ends_with(".so") && path.contains("greenlet/")
}

/// Whether the process runs CPython: its executable is `python*`, or it maps `libpython3*`.
fn is_python(exe: &str, mapped: &[(u64, u64, String)]) -> bool {
    file_name(exe).starts_with("python")
        || mapped
            .iter()
            .any(|(_, _, p)| file_name(p).starts_with("libpython3"))
}

/// What a process's mappings say: `Ok(None)` not Python, `Ok(Some(module path))` Python with
/// greenlet loaded, or why it cannot be sampled.
fn classify<'a>(
    exe: &str,
    mapped: &'a [(u64, u64, String)],
) -> Result<Option<&'a String>, PyLookupError> {
    let module = mapped.iter().find(|(_, _, p)| is_greenlet_module(p));
    if module.is_none() && !is_python(exe, mapped) {
        return Ok(None);
    }
    if mapped
        .iter()
        .any(|(_, _, p)| file_name(p).starts_with("ld-musl"))
    {
        return Err(PyLookupError::Musl);
    }
    match module {
        Some((_, _, path)) => Ok(Some(path)),
        None => Err(PyLookupError::NoGreenlet),
    }
}

/// The Python greenlet layout of process `pid`: `Ok(None)` when it is not a Python process
/// at all (the caller tries the Rust runtime's sampler), an error when it is one that cannot
/// be sampled.
pub fn detect(pid: i32) -> Result<Option<PyGreenletLayout>, PyLookupError> {
    let maps_path = PathBuf::from(format!("/proc/{pid}/maps"));
    let maps = std::fs::read_to_string(&maps_path).map_err(|source| PyLookupError::Io {
        path: maps_path,
        source,
    })?;
    let mapped = file_mappings(&maps);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(path) = classify(&exe, &mapped)? else {
        return Ok(None);
    };
    // The lowest mapping of the module's first bytes is where its first segment was loaded.
    let start = mapped
        .iter()
        .filter(|(_, off, p)| p == path && *off == 0)
        .map(|(s, _, _)| *s)
        .min()
        .ok_or_else(|| PyLookupError::Missing {
            path: path.into(),
            what: "mapping of its first page".into(),
        })?;
    let on_disk = PathBuf::from(format!("/proc/{pid}/root{path}"));
    let data = std::fs::read(&on_disk).map_err(|source| PyLookupError::Io {
        path: on_disk,
        source,
    })?;
    let version = dist_version(&PathBuf::from(format!("/proc/{pid}/root{path}")));
    match layout_of(Path::new(path), &data, start) {
        Ok(layout) => Ok(Some(PyGreenletLayout { version, ..layout })),
        Err(PyLookupError::TooOld { path, .. }) => Err(PyLookupError::TooOld {
            path,
            version: version.unwrap_or_else(|| "(version unknown)".into()),
        }),
        Err(e) => Err(e),
    }
}

/// greenlet's version from the `greenlet-X.dist-info` directory beside its package.
fn dist_version(module: &Path) -> Option<String> {
    let site = module.parent()?.parent()?;
    std::fs::read_dir(site).ok()?.find_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        let v = name.strip_prefix("greenlet-")?.strip_suffix(".dist-info")?;
        Some(v.to_string())
    })
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
    let dwarf = load_dwarf(&file).map_err(|e| bad(format!("DWARF: {e}")))?;
    let wanted: [(&str, bool, &[&str]); 4] = [
        ("ThreadStateCreator<", true, &["_state"]),
        ("ThreadState", false, &["main_greenlet", "current_greenlet"]),
        ("_object", false, &["ob_type"]),
        ("_typeobject", false, &["tp_name"]),
    ];
    let mut found = [None; 5];
    for (i, (name, prefix, members)) in wanted.iter().enumerate() {
        let offsets = member_offsets(&dwarf, name, *prefix, members)
            .map_err(|e| bad(format!("DWARF: {e}")))?
            .ok_or_else(|| {
                missing(&format!(
                    "DWARF type {name}{}",
                    if *prefix { "...>" } else { "" }
                ))
            })?;
        let slot = [0, 1, 3, 4][i];
        for (j, off) in offsets.into_iter().enumerate() {
            found[slot + j] = Some(off);
        }
    }
    let [Some(state), Some(main), Some(current), Some(ob_type), Some(tp_name)] = found else {
        return Err(missing("DWARF member offsets"));
    };
    let narrow = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| bad(format!("{what} offset {v} is out of range")))
    };
    Ok(PyGreenletLayout {
        module: path.into(),
        version: None,
        python: python_tag(file_name(&path.to_string_lossy())),
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

type Slice<'a> = EndianSlice<'a, LittleEndian>;

fn load_dwarf<'a>(file: &object::File<'a>) -> Result<gimli::Dwarf<Slice<'a>>, gimli::Error> {
    use object::ObjectSection;
    gimli::Dwarf::load(|id| {
        let data = file
            .section_by_name(id.name())
            .and_then(|s| s.data().ok())
            .unwrap_or(&[]);
        Ok::<_, gimli::Error>(EndianSlice::new(data, LittleEndian))
    })
}

/// The offsets of `members` in the first complete struct or class named `name` (or whose name
/// starts with it, when `prefix`) that has all of them; `None` if there is none.
fn member_offsets(
    dwarf: &gimli::Dwarf<Slice<'_>>,
    name: &str,
    prefix: bool,
    members: &[&str],
) -> Result<Option<Vec<u64>>, gimli::Error> {
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut cursor = unit.entries();
        // The depth of the matching type being read, and the offsets found in it so far.
        let mut inside: Option<(isize, Vec<Option<u64>>)> = None;
        while let Some(entry) = cursor.next_dfs()? {
            let depth = entry.depth();
            if let Some((d, found)) = &mut inside {
                if depth > *d {
                    if depth == *d + 1 && entry.tag() == gimli::DW_TAG_member {
                        let Some(n) = attr_name(dwarf, &unit, entry) else {
                            continue;
                        };
                        if let Some(i) = members.iter().position(|m| *m == n) {
                            found[i] = entry
                                .attr_value(gimli::DW_AT_data_member_location)
                                .and_then(|v| v.udata_value());
                        }
                    }
                    continue;
                }
                if found.iter().all(Option::is_some) {
                    return Ok(Some(found.iter().map(|o| o.unwrap_or(0)).collect()));
                }
                inside = None;
            }
            if !matches!(
                entry.tag(),
                gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type
            ) || entry.attr_value(gimli::DW_AT_declaration).is_some()
            {
                continue;
            }
            let Some(n) = attr_name(dwarf, &unit, entry) else {
                continue;
            };
            if (prefix && n.starts_with(name)) || (!prefix && n == name) {
                inside = Some((depth, vec![None; members.len()]));
            }
        }
        if let Some((_, found)) = inside {
            if found.iter().all(Option::is_some) {
                return Ok(Some(found.iter().map(|o| o.unwrap_or(0)).collect()));
            }
        }
    }
    Ok(None)
}

fn attr_name<'a>(
    dwarf: &gimli::Dwarf<Slice<'a>>,
    unit: &gimli::Unit<Slice<'a>>,
    entry: &gimli::DebuggingInformationEntry<Slice<'a>>,
) -> Option<&'a str> {
    let v = entry.attr_value(gimli::DW_AT_name)?;
    dwarf.attr_string(unit, v).ok()?.to_string().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_give_start_offset_and_path() {
        let maps = "7f00-7f10 r--p 00000000 08:01 12 /x/greenlet/_greenlet.cpython-311-x86_64-linux-gnu.so\n\
                    7f10-7f20 r-xp 00001000 08:01 12 /x/greenlet/_greenlet.cpython-311-x86_64-linux-gnu.so\n\
                    7f30-7f40 rw-p 00000000 00:00 0 \n\
                    7f50-7f60 r-xp 00000000 08:01 13 /usr/lib/a b.so\n";
        let m = file_mappings(maps);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1], (0x7f10, 0x1000, m[0].2.clone()));
        assert_eq!(m[2].2, "/usr/lib/a b.so");
        assert!(is_greenlet_module(&m[0].2));
        assert!(!is_greenlet_module("/x/_greenlet_other/foo.so"));
        assert!(is_python("/usr/bin/python3.11", &[]));
        assert!(is_python(
            "/usr/bin/uwsgi",
            &[(0, 0, "/usr/lib/libpython3.11.so.1.0".into())]
        ));
        assert!(!is_python("/usr/bin/demo", &m));
        assert_eq!(
            python_tag("_greenlet.cpython-313-x86_64-linux-gnu.so").as_deref(),
            Some("cpython-313")
        );
        assert_eq!(python_tag("_greenlet.abi3.so"), None);
    }

    #[test]
    fn a_process_is_rust_python_with_greenlet_python_without_or_musl() {
        let map = |paths: &[&str]| -> Vec<(u64, u64, String)> {
            paths.iter().map(|p| (0, 0, p.to_string())).collect()
        };
        let glibc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
        let module = "/site/greenlet/_greenlet.cpython-311-x86_64-linux-gnu.so";
        assert!(matches!(classify("/bin/demo", &map(&[glibc])), Ok(None)));
        let m = map(&[glibc, module]);
        assert_eq!(
            classify("/usr/bin/python3.11", &m).unwrap(),
            Some(&module.to_string())
        );
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
