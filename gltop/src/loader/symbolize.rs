//! User addresses of a traced process to frame names, with `blazesym`: one symbolizer for
//! `gltop record`'s profiles and for the stacks of blocking episodes.
//!
//! The executable mappings are read from `/proc/PID/maps` at start (and again on
//! [`Symbolizer::refresh`]) and each mapped file is opened then, so that stacks can still be
//! symbolized after the target exited: an address becomes a file offset in its mapping,
//! which blazesym turns into a symbol of that ELF file (its DWARF, when present, adds the
//! inlined calls; its symbol table names code without DWARF).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};

/// One executable mapping of the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecMapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset mapped at `start`.
    pub offset: u64,
    /// What `/proc/PID/maps` names it: a path, or `[vdso]` and the like.
    pub name: String,
}

impl ExecMapping {
    /// Whether it maps a file (rather than `[vdso]` or anonymous memory).
    pub fn is_file(&self) -> bool {
        self.name.starts_with('/')
    }
}

/// An executable mapping of a `/proc/PID/maps` line (None for any other line).
pub fn parse_exec_mapping(line: &str) -> Option<ExecMapping> {
    let mut f = line.splitn(6, char::is_whitespace);
    let (start, end) = f.next()?.split_once('-')?;
    let perms = f.next()?;
    let offset = f.next()?;
    let _dev = f.next()?;
    let _inode = f.next()?;
    let name = f.next().unwrap_or("").trim().to_string();
    if perms.as_bytes().get(2) != Some(&b'x') || name.is_empty() {
        return None;
    }
    Some(ExecMapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        name,
    })
}

/// The mapping (index into `maps`) that holds `addr`.
pub fn mapping_of(maps: &[ExecMapping], addr: u64) -> Option<usize> {
    maps.iter().position(|m| (m.start..m.end).contains(&addr))
}

/// Symbolizes the user addresses of one process.
pub struct Symbolizer {
    pid: i32,
    maps: Vec<ExecMapping>,
    /// The file of each mapping, opened at start (None: could not be opened).
    files: Vec<Option<File>>,
    blaze: Blaze,
    cache: HashMap<(u64, bool), Vec<String>>,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("pid", &self.pid)
            .field("mappings", &self.maps.len())
            .finish()
    }
}

impl Symbolizer {
    /// Reads the executable mappings of `pid` and opens their files.
    pub fn for_process(pid: i32) -> std::io::Result<Symbolizer> {
        let mut s = Symbolizer {
            pid,
            maps: Vec::new(),
            files: Vec::new(),
            blaze: Blaze::builder().enable_code_info(false).build(),
            cache: HashMap::new(),
        };
        s.read_maps()?;
        Ok(s)
    }

    /// Reads the mappings again (code loaded or unloaded since), opening the files of new
    /// ones. Keeps the last ones read when the process is gone, to name what it left.
    pub fn refresh(&mut self) {
        let _ = self.read_maps();
    }

    fn read_maps(&mut self) -> std::io::Result<()> {
        let pid = self.pid;
        let maps: Vec<ExecMapping> = std::fs::read_to_string(format!("/proc/{pid}/maps"))?
            .lines()
            .filter_map(parse_exec_mapping)
            .collect();
        if maps == self.maps {
            return Ok(());
        }
        let mut old: Vec<(ExecMapping, Option<File>)> =
            self.maps.drain(..).zip(self.files.drain(..)).collect();
        let files = maps
            .iter()
            .map(|m| {
                if let Some(i) = old.iter().position(|(o, _)| o == m) {
                    return old.swap_remove(i).1;
                }
                if !m.is_file() {
                    return None;
                }
                // The mapped file itself, even if its path was replaced or deleted since.
                let by_map = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
                File::open(by_map)
                    .or_else(|_| File::open(format!("/proc/{pid}/root{}", m.name)))
                    .ok()
            })
            .collect();
        self.maps = maps;
        self.files = files;
        // An address may now be in another mapping.
        self.cache.clear();
        Ok(())
    }

    /// The executable mappings read at start.
    pub fn mappings(&self) -> &[ExecMapping] {
        &self.maps
    }

    /// Whether `addr` is in an executable mapping of the target.
    pub fn is_mapped(&self, addr: u64) -> bool {
        mapping_of(&self.maps, addr).is_some()
    }

    /// The frames of one stack (innermost first): each address symbolized, the inlined
    /// calls at it included (innermost first too). Every address but the first is a return
    /// address, symbolized one byte back so that it names the call's function.
    pub fn stack(&mut self, addrs: &[u64]) -> Vec<String> {
        let mut frames = Vec::with_capacity(addrs.len());
        for (i, &addr) in addrs.iter().enumerate() {
            frames.extend(self.frames_at(addr, i > 0).iter().cloned());
        }
        frames
    }

    /// One name per address of a stack (innermost first), as [`Symbolizer::stack`] symbolizes
    /// it: a function with the calls inlined into it at that address is named
    /// `innermost <- ... <- function`.
    pub fn frame_names(&mut self, addrs: &[u64]) -> Vec<String> {
        addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| self.frames_at(addr, i > 0).join(" <- "))
            .collect()
    }

    fn frames_at(&mut self, addr: u64, is_return: bool) -> &[String] {
        if !self.cache.contains_key(&(addr, is_return)) {
            let frames = self.resolve(addr, is_return);
            self.cache.insert((addr, is_return), frames);
        }
        &self.cache[&(addr, is_return)]
    }

    fn resolve(&self, addr: u64, is_return: bool) -> Vec<String> {
        let Some(i) = mapping_of(&self.maps, addr) else {
            return vec![format!("[unknown] 0x{addr:x}")];
        };
        let m = &self.maps[i];
        let at = if is_return {
            addr.saturating_sub(1)
        } else {
            addr
        };
        let file_offset = at - m.start + m.offset;
        let short = Path::new(&m.name)
            .file_name()
            .map_or(m.name.clone(), |n| n.to_string_lossy().into_owned());
        let fallback = || vec![format!("{short}+0x{file_offset:x}")];
        let Some(file) = &self.files[i] else {
            return if m.is_file() {
                fallback()
            } else {
                vec![m.name.clone()]
            };
        };
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        // DWARF first (it has the inlined calls), then the symbol tables: code without DWARF,
        // such as corosensei's assembly trampoline, is named only there.
        for debug_syms in [true, false] {
            let mut elf = Elf::new(path.clone());
            elf.debug_syms = debug_syms;
            let src = Source::Elf(elf);
            if let Ok(Symbolized::Sym(sym)) = self
                .blaze
                .symbolize_single(&src, Input::FileOffset(file_offset))
            {
                // blazesym gives the inlined calls outermost first; a stack is innermost
                // first.
                let mut frames: Vec<String> = sym
                    .inlined
                    .iter()
                    .rev()
                    .map(|f| f.name.to_string())
                    .collect();
                frames.push(sym.name.to_string());
                return frames;
            }
        }
        fallback()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_executable_mappings_of_proc_maps() {
        let text = "\
55d0c0a00000-55d0c0a42000 r--p 00000000 08:01 1234 /work/target/debug/demo
55d0c0a42000-55d0c0c00000 r-xp 00042000 08:01 1234 /work/target/debug/demo
7f00aa000000-7f00aa021000 rw-p 00000000 00:00 0
7f00ab000000-7f00ab100000 r-xp 00028000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd1e5f0000-7ffd1e5f2000 r-xp 00000000 00:00 0                          [vdso]
7ffd1e600000-7ffd1e602000 r-xp 00000000 00:00 0
7f00ac000000-7f00ac001000 r-xp 00000000 08:01 77 /tmp/a file with spaces (deleted)";
        let maps: Vec<ExecMapping> = text.lines().filter_map(parse_exec_mapping).collect();
        assert_eq!(maps.len(), 4, "{maps:?}");
        assert_eq!(
            maps[0],
            ExecMapping {
                start: 0x55d0c0a42000,
                end: 0x55d0c0c00000,
                offset: 0x42000,
                name: "/work/target/debug/demo".into(),
            }
        );
        assert!(maps[0].is_file());
        assert_eq!(maps[2].name, "[vdso]");
        assert!(!maps[2].is_file());
        assert_eq!(maps[3].name, "/tmp/a file with spaces (deleted)");
        assert_eq!(mapping_of(&maps, 0x55d0c0a42000), Some(0));
        assert_eq!(mapping_of(&maps, 0x55d0c0c00000), None);
        assert_eq!(mapping_of(&maps, 0x7ffd1e5f0010), Some(2));
        assert_eq!(mapping_of(&maps, 0x10), None);
    }

    #[inline(never)]
    fn a_function_to_find() -> u64 {
        std::hint::black_box(a_function_to_find as *const () as u64)
    }

    #[test]
    fn names_a_function_of_this_process() {
        let addr = a_function_to_find();
        let mut s = Symbolizer::for_process(std::process::id() as i32).expect("own maps");
        assert!(s.is_mapped(addr));
        let frames = s.stack(&[addr]);
        assert!(
            frames.iter().any(|f| f.ends_with("a_function_to_find")),
            "{frames:?}"
        );
        let stray = s.stack(&[8]);
        assert_eq!(stray, ["[unknown] 0x8"]);
        // One name per address: the same function, and the stray address as itself.
        let names = s.frame_names(&[addr, 8]);
        assert_eq!(names.len(), 2);
        assert!(names[0].contains("a_function_to_find"), "{names:?}");
        assert_eq!(names[1], "[unknown] 0x8");
        // Refreshing with unchanged mappings keeps what was resolved.
        s.refresh();
        assert!(s.is_mapped(addr));
    }
}
