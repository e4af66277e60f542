//! Reading a process's `greenlet` probe semaphores from outside, through `/proc/PID/mem`.
//!
//! A USDT semaphore counts the tracers that enabled its probe; the kernel raises it while a
//! uprobe with that reference counter is attached and lowers it on detach, including when
//! the tracer dies. Reading it tells whether anything is attached to a process right now.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt};

use super::elf;
use super::Error;

/// One line of `/proc/PID/maps`: the address range, file offset and inode of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset mapped at `start`.
    pub offset: u64,
    /// Inode of the mapped file (0 for anonymous memory).
    pub inode: u64,
    /// Mapped writable (`rw-p`): semaphores live only in such mappings.
    pub writable: bool,
}

/// Parses one `/proc/PID/maps` line.
pub fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut f = line.split_whitespace();
    let (start, end) = f.next()?.split_once('-')?;
    let perms = f.next()?;
    let offset = f.next()?;
    let _dev = f.next()?;
    let inode = f.next()?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        inode: inode.parse().ok()?,
        writable: perms.as_bytes().get(1) == Some(&b'w'),
    })
}

/// The address at which file offset `file_offset` of inode `inode` is mapped writable, as
/// the kernel looks for a uprobe's reference counter. (The same file page can also be mapped
/// read-only just before it: the RELRO part of the data segment.)
pub fn address_of(maps: &[Mapping], inode: u64, file_offset: u64) -> Option<u64> {
    maps.iter()
        .find(|m| {
            m.writable
                && m.inode == inode
                && file_offset >= m.offset
                && file_offset < m.offset + (m.end - m.start)
        })
        .map(|m| m.start + (file_offset - m.offset))
}

/// The value of each `greenlet` probe's semaphore in process `pid`, by probe name.
pub fn semaphores(pid: i32) -> Result<BTreeMap<String, u16>, Error> {
    let exe = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
    let inode = std::fs::metadata(&exe)
        .map_err(|e| Error::from_io(e, &exe))?
        .ino();
    let maps_path = std::path::PathBuf::from(format!("/proc/{pid}/maps"));
    let maps: Vec<Mapping> = std::fs::read_to_string(&maps_path)
        .map_err(|e| Error::from_io(e, &maps_path))?
        .lines()
        .filter_map(parse_maps_line)
        .collect();
    let mem_path = std::path::PathBuf::from(format!("/proc/{pid}/mem"));
    let mem = std::fs::File::open(&mem_path).map_err(|e| Error::from_io(e, &mem_path))?;
    let mut values = BTreeMap::new();
    for site in elf::greenlet_sites(&exe)?.sites {
        let Some(offset) = site.semaphore_offset else {
            continue;
        };
        if values.contains_key(&site.name) {
            continue;
        }
        let addr = address_of(&maps, inode, offset).ok_or_else(|| Error::BadExecutable {
            path: exe.clone(),
            reason: format!("the semaphore of greenlet:{} is not mapped", site.name),
        })?;
        let mut buf = [0u8; 2];
        mem.read_exact_at(&mut buf, addr)
            .map_err(|e| Error::from_io(e, &mem_path))?;
        values.insert(site.name, u16::from_ne_bytes(buf));
    }
    Ok(values)
}

/// Whether all four `greenlet` probes of process `pid` are enabled (a tracer such as gltop
/// is fully attached). A program can poll this on itself to start only once traced.
pub fn all_enabled(pid: i32) -> Result<bool, Error> {
    let values = semaphores(pid)?;
    Ok(greenlet::probes::PROBE_NAMES
        .iter()
        .all(|p| values.get(*p).is_some_and(|&n| n > 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_and_finds_addresses() {
        // The RELRO mapping (r--p, made read-only after start-up) also covers file page
        // 0x200000, at another address: the semaphore is in the writable one.
        let text = "\
55d0c0a00000-55d0c0a4f000 r--p 00000000 fd:01 1234567 /usr/bin/demo
55d0c0a4f000-55d0c0c00000 r-xp 0004f000 fd:01 1234567 /usr/bin/demo
55d0c0dee000-55d0c0e00000 r--p 001ee000 fd:01 1234567 /usr/bin/demo
55d0c0e00000-55d0c0e10000 rw-p 00200000 fd:01 1234567 /usr/bin/demo
7ffd1a000000-7ffd1a021000 rw-p 00000000 00:00 0 [stack]";
        let maps: Vec<Mapping> = text.lines().filter_map(parse_maps_line).collect();
        assert_eq!(maps.len(), 5);
        assert_eq!(maps[3].offset, 0x200000);
        assert!(maps[3].writable && !maps[2].writable);
        assert_eq!(address_of(&maps, 1234567, 0x200458), Some(0x55d0c0e00458));
        assert_eq!(
            address_of(&maps, 1234567, 0x1ef000),
            None,
            "read-only: not a semaphore"
        );
        assert_eq!(address_of(&maps, 1234567, 0x300000), None);
        assert_eq!(address_of(&maps, 42, 0x200458), None);
        assert_eq!(parse_maps_line("garbage"), None);
    }
}
