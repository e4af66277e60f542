//! Symbolizing user-space addresses of a traced process: one job, pid + addresses -> frame
//! names, with blazesym (ELF symbols and DWARF of the process's mapped files, names
//! demangled). Frames it cannot name are shown as their address.

use blazesym::symbolize::source::{Elf, Process as ProcessSource, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::Pid;

/// Names the frames of one process's stacks; keeps what it parsed between calls.
pub struct Frames {
    symbolizer: Symbolizer,
    pid: u32,
    /// The process's file mappings when last remembered: (start, end, file offset, path).
    maps: Vec<(u64, u64, u64, std::path::PathBuf)>,
    /// Its executable mappings when last remembered: (start, end).
    code: Vec<(u64, u64)>,
}

impl std::fmt::Debug for Frames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames").field("pid", &self.pid).finish()
    }
}

impl Frames {
    /// A symbolizer for the addresses of process `pid`.
    pub fn new(pid: i32) -> Frames {
        Frames {
            symbolizer: Symbolizer::new(),
            pid: pid as u32,
            maps: Vec::new(),
            code: Vec::new(),
        }
    }

    /// Remembers the process's file mappings, to name its frames after it exits (from the
    /// files themselves). Keeps the last ones when the process is gone.
    pub fn remember_maps(&mut self) {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)) else {
            return;
        };
        self.code = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (range, perms) = (f.next()?, f.next()?);
                let (a, b) = range.split_once('-')?;
                perms.contains('x').then_some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            })
            .collect();
        self.maps = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (range, _perms, offset) = (f.next()?, f.next()?, f.next()?);
                let (_dev, _inode, path) = (f.next()?, f.next()?, f.next()?);
                if !path.starts_with('/') {
                    return None;
                }
                let (a, b) = range.split_once('-')?;
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                    u64::from_str_radix(offset, 16).ok()?,
                    std::path::PathBuf::from(path),
                ))
            })
            .collect();
    }

    /// Whether `addr` is in executable memory of the process (as last remembered).
    pub fn is_code(&self, addr: u64) -> bool {
        self.code.iter().any(|(a, b)| (*a..*b).contains(&addr))
    }

    /// Names `addr` from the remembered mappings and the mapped file.
    fn name_from_file(&self, addr: u64) -> Option<String> {
        let (start, _, offset, path) = self
            .maps
            .iter()
            .find(|(start, end, _, _)| (*start..*end).contains(&addr))?;
        let src = Source::Elf(Elf::new(path));
        let off = addr - start + offset;
        let syms = self
            .symbolizer
            .symbolize(&src, Input::FileOffset(&[off]))
            .ok()?;
        Some(frame_name(syms.first()?.as_sym()?))
    }

    /// One name per address, in order: the function (with the functions inlined into it at
    /// that address, innermost first), or `0x...` when it cannot be named.
    pub fn names(&self, addrs: &[u64]) -> Vec<String> {
        let unknown = |a: &u64| format!("{a:#x}");
        if addrs.is_empty() {
            return Vec::new();
        }
        let src = Source::Process(ProcessSource::new(Pid::from(self.pid)));
        let syms = match self.symbolizer.symbolize(&src, Input::AbsAddr(addrs)) {
            Ok(s) => s,
            Err(e) => {
                if std::env::var_os("GLTOP_DEBUG").is_some() {
                    eprintln!("gltop: cannot symbolize in process {}: {e:#}", self.pid);
                }
                // The process may be gone: its files are still there.
                return addrs
                    .iter()
                    .map(|a| self.name_from_file(*a).unwrap_or_else(|| unknown(a)))
                    .collect();
            }
        };
        syms.iter()
            .zip(addrs)
            .map(|(s, a)| match s {
                Symbolized::Sym(sym) => frame_name(sym),
                Symbolized::Unknown(why) => self.name_from_file(*a).unwrap_or_else(|| {
                    if std::env::var_os("GLTOP_DEBUG").is_some() {
                        eprintln!("gltop: {a:#x} of process {}: {why}", self.pid);
                    }
                    unknown(a)
                }),
            })
            .collect()
    }
}

/// A symbol's name, after the functions inlined into it at the address, innermost first.
fn frame_name(sym: &blazesym::symbolize::Sym<'_>) -> String {
    let mut name = String::new();
    for f in sym.inlined.iter().rev() {
        name.push_str(&f.name);
        name.push_str(" <- ");
    }
    name.push_str(&sym.name);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_symbolize() -> u64 {
        marker_function_for_symbolize as *const () as usize as u64
    }

    #[test]
    fn names_a_function_of_this_process() {
        let addr = marker_function_for_symbolize();
        let names = Frames::new(std::process::id() as i32).names(&[addr, 1]);
        assert_eq!(names.len(), 2);
        assert!(
            names[0].contains("marker_function_for_symbolize"),
            "{names:?}"
        );
        assert_eq!(names[1], "0x1");
        // The same from the mapped file, as after the process is gone.
        let mut frames = Frames::new(std::process::id() as i32);
        frames.remember_maps();
        let name = frames.name_from_file(addr).expect("named from the file");
        assert!(name.contains("marker_function_for_symbolize"), "{name}");
    }
}
