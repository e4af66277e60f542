//! A Python process as its memory map shows it: whether it runs CPython, which greenlet
//! extension module it loaded, that module's version and load address. One reading for both
//! Python backends, the exact one ([`super::python`]) and the sampler
//! ([`super::pygreenlet`], [`super::pyframes`]).

use std::path::{Path, PathBuf};

/// One file mapping of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Where it starts in the process.
    pub start: u64,
    /// The file offset mapped there.
    pub offset: u64,
    /// The file, as the process names it (its mount namespace).
    pub path: String,
}

/// The file mappings of a `/proc/PID/maps` text (anonymous and special mappings left out).
pub fn parse_maps(maps: &str) -> Vec<Mapping> {
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let _perms = f.next()?;
            let offset = u64::from_str_radix(f.next()?, 16).ok()?;
            let (_dev, _inode) = (f.next()?, f.next()?);
            let path = f.collect::<Vec<&str>>().join(" ");
            if !path.starts_with('/') {
                return None;
            }
            let start = u64::from_str_radix(range.split('-').next()?, 16).ok()?;
            Some(Mapping {
                start,
                offset,
                path,
            })
        })
        .collect()
}

/// The file mappings of process `pid`.
pub fn mappings(pid: i32) -> std::io::Result<Vec<Mapping>> {
    Ok(parse_maps(&std::fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

/// The last component of a path.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A path of the target's, openable from here (through `/proc/PID/root`).
pub fn from_here(pid: i32, path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root{path}"))
}

/// Whether a process runs CPython: its executable is `python*`, or it maps `libpython3*`
/// (an embedding program such as uwsgi).
pub fn is_python(exe: &str, mapped: &[Mapping]) -> bool {
    file_name(exe).starts_with("python")
        || mapped
            .iter()
            .any(|m| file_name(&m.path).starts_with("libpython3"))
}

/// Whether the process's C library is musl (no glibc thread-local layout to read).
pub fn is_musl(mapped: &[Mapping]) -> bool {
    mapped
        .iter()
        .any(|m| file_name(&m.path).starts_with("ld-musl"))
}

/// Whether process `pid` runs CPython and has not loaded greenlet (yet): a prefork worker
/// between its fork and its `import greenlet`. False if its map cannot be read.
pub fn awaits_greenlet(pid: i32) -> bool {
    let Ok(mapped) = mappings(pid) else {
        return false;
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    greenlet_module(&mapped).is_none() && is_python(&exe, &mapped)
}

/// Which greenlet extension module a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// `_greenlet*.so`: greenlet 2.0 and later (C++).
    Current,
    /// `greenlet.*.so`: greenlet 1.x (C), which neither backend can read.
    Old,
}

/// Which greenlet extension module `path` is, if it is one.
pub fn module_kind(path: &str) -> Option<ModuleKind> {
    let name = file_name(path);
    if !name.contains(".so") {
        None
    } else if name.starts_with("_greenlet") {
        Some(ModuleKind::Current)
    } else if name.starts_with("greenlet.") {
        Some(ModuleKind::Old)
    } else {
        None
    }
}

/// The greenlet extension module a process mapped (the first, if several), and its kind.
pub fn greenlet_module(mapped: &[Mapping]) -> Option<(&str, ModuleKind)> {
    mapped
        .iter()
        .find_map(|m| Some((m.path.as_str(), module_kind(&m.path)?)))
}

/// Where `path`'s first page is mapped: its file offset 0, the base its segments are
/// placed from.
pub fn load_address(mapped: &[Mapping], path: &str) -> Option<u64> {
    mapped
        .iter()
        .filter(|m| m.path == path && m.offset == 0)
        .map(|m| m.start)
        .min()
}

/// greenlet's version for a module at `module` (openable from here): `__version__` of the
/// package's `__init__.py`, else the `greenlet-X.dist-info` directory beside the package.
pub fn greenlet_version(module: &Path) -> Option<String> {
    let package = module.parent()?;
    std::fs::read_to_string(package.join("__init__.py"))
        .ok()
        .and_then(|s| version_in_source(&s))
        .or_else(|| {
            std::fs::read_dir(package.parent()?).ok()?.find_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let v = name.strip_prefix("greenlet-")?.strip_suffix(".dist-info")?;
                Some(v.to_string())
            })
        })
}

/// `3.5.6` of a Python source line `__version__ = '3.5.6'`.
pub fn version_in_source(source: &str) -> Option<String> {
    source.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("__version__")?.trim_start();
        let v = rest.strip_prefix('=')?.trim();
        let v = v.trim_matches(|c| c == '\'' || c == '"');
        (!v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'))
            .then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
7f00-7f10 r--p 00000000 08:01 12 /x/greenlet/_greenlet.cpython-311-x86_64-linux-gnu.so
7f10-7f20 r-xp 00001000 08:01 12 /x/greenlet/_greenlet.cpython-311-x86_64-linux-gnu.so
7f30-7f40 rw-p 00000000 00:00 0 
7f50-7f60 r-xp 00000000 08:01 13 /usr/lib/a b.so
7f70-7f80 r-xp 00001000 08:01 124 /usr/lib/libpython3.11.so.1.0
";

    #[test]
    fn maps_lines_give_start_offset_and_path() {
        let m = parse_maps(MAPS);
        assert_eq!(m.len(), 4);
        assert_eq!((m[1].start, m[1].offset), (0x7f10, 0x1000));
        assert_eq!(m[1].path, m[0].path);
        assert_eq!(m[2].path, "/usr/lib/a b.so");
        assert_eq!(load_address(&m, &m[0].path), Some(0x7f00));
        assert_eq!(load_address(&m, "/nothing"), None);
    }

    #[test]
    fn tells_python_processes_and_greenlet_modules() {
        let m = parse_maps(MAPS);
        assert_eq!(
            greenlet_module(&m),
            Some((
                "/x/greenlet/_greenlet.cpython-311-x86_64-linux-gnu.so",
                ModuleKind::Current
            ))
        );
        assert!(is_python("/usr/bin/uwsgi", &m));
        assert!(is_python("/usr/bin/python3.11", &[]));
        assert!(!is_python("/usr/bin/demo", &m[..2]));
        assert!(!is_musl(&m));
        assert!(is_musl(&parse_maps(
            "1-2 r-xp 0 08:01 1 /lib/ld-musl-x86_64.so.1\n"
        )));
        let old = parse_maps(
            "7f0-7f1 r-xp 0 08:01 1 /x/site-packages/greenlet.cpython-39-x86_64-linux-gnu.so\n",
        );
        assert_eq!(greenlet_module(&old).map(|g| g.1), Some(ModuleKind::Old));
        assert_eq!(module_kind("/x/libgreenlet_stuff.txt"), None);
        assert_eq!(module_kind("/x/_greenlet_other/foo.so"), None);
    }

    #[test]
    fn reads_the_version_from_source() {
        assert_eq!(
            version_in_source("x = 1\n__version__ = '3.5.6'\n"),
            Some("3.5.6".into())
        );
        assert_eq!(
            version_in_source("__version__ = \"2.0.2\""),
            Some("2.0.2".into())
        );
        assert_eq!(version_in_source("__version__ = get()"), None);
        assert_eq!(version_in_source(""), None);
    }
}
