//! Where a target's greenlet runtime keeps what a sampler reads: the runtime's published
//! [`SampleLayout`], found in the executable's `.greenlet_sample` section and read from the
//! running process through `/proc/PID/mem`.
//!
//! The runtime stores nothing per switch for a sampler but one counter: a BPF program on a
//! timer reads, from the sampled thread, the thread-local pointer to the runtime's per-thread
//! state (at `fsbase + tls_offset`), then the running greenlet and its id through the offsets
//! published here (the reads are spelled out in `bpf/sample.h`). Section headers survive
//! `strip`, so a stripped binary is read the same way.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::semaphore::{address_of, parse_maps_line, Mapping};

/// The section the runtime publishes its layout in.
pub const SECTION: &str = ".greenlet_sample";
/// The layout's first eight bytes.
pub const MAGIC: [u8; 8] = *b"GRNLTSMP";
/// The layout version this gltop reads (2: the origin and the stack bounds, which tell the
/// switch window apart; `bpf/sample.h`).
pub const VERSION: u32 = 2;
/// Bytes of the published layout (version 2).
pub const SIZE: usize = 56;
/// Bytes of the layout's header (magic, version, size), the same in every version.
const HEADER: usize = 16;

/// The offsets a BPF program needs to read a thread's running greenlet, as the runtime of one
/// process published them. Mirrors `struct gl_layout` of `bpf/sample.h`, which BPF programs
/// get in a map keyed by the process id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleLayout {
    /// Address of the thread-local pointer to the runtime's thread state, minus the thread
    /// pointer (`fsbase` on x86-64).
    pub tls_offset: i64,
    /// Offset in the thread state of the pointer to the running greenlet.
    pub state_current: u32,
    /// Offset in the thread state of the thread's switch counter (a `u64`).
    pub state_switches: u32,
    /// Offset in a greenlet of its id (a `u64`).
    pub inner_id: u32,
    /// Offset in a greenlet of its flags byte (bit 0: idle by design).
    pub inner_flags: u32,
    /// Offset in the thread state of the pointer to the last transfer's sender.
    pub state_origin: u32,
    /// Offset in a greenlet of its stack's bounds: `low` and `high`, two `u64`s (zero: unknown).
    pub inner_stack: u32,
}

/// The flags-byte bit of a greenlet marked idle by design (`Builder::idle`).
pub const IDLE: u8 = 1;

/// Why a process's sample layout cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The executable has no `.greenlet_sample` section.
    #[error(
        "{exe} publishes no sample layout (no {SECTION} section): it is not built with a greenlet runtime that supports sampling"
    )]
    NotPublished {
        /// The executable that was searched.
        exe: PathBuf,
    },
    /// The section is there but does not hold a layout this gltop understands.
    #[error("{exe}: {reason}")]
    Unsupported {
        /// The executable.
        exe: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The runtime's threads disagree on where their thread-local lives (the runtime is not
    /// in the executable's static TLS block, e.g. it is in a `dlopen`ed library).
    #[error("process {pid}: the greenlet runtime's thread-local is not at one offset on every thread, so its threads cannot be sampled")]
    TlsNotStatic {
        /// The process.
        pid: i32,
    },
    /// Reading the executable or the process failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What was read.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// Checks the layout's magic, version and size (its first [`HEADER`] bytes).
fn check_header(bytes: &[u8], exe: &Path) -> Result<(), LayoutError> {
    let unsupported = |reason: String| LayoutError::Unsupported {
        exe: exe.to_path_buf(),
        reason,
    };
    if bytes.len() < HEADER || bytes[..8] != MAGIC {
        return Err(unsupported(format!(
            "{SECTION} does not start with the layout's magic"
        )));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let (version, size) = (u32_at(8), u32_at(12));
    if version != VERSION || size as usize != SIZE {
        let hint = if version < VERSION {
            "it was built with an older greenlet runtime: rebuild it"
        } else {
            "this gltop is older than the program's greenlet runtime"
        };
        return Err(unsupported(format!(
            "sample layout version {version} ({size} bytes); this gltop reads version {VERSION} ({SIZE} bytes): {hint}"
        )));
    }
    Ok(())
}

/// The published layout, decoded: `None` while the runtime has not created a thread state
/// yet (nothing has used it), so the thread-local's offset is not known.
pub fn decode(bytes: &[u8], pid: i32, exe: &Path) -> Result<Option<SampleLayout>, LayoutError> {
    check_header(bytes, exe)?;
    if bytes.len() < SIZE {
        return Err(LayoutError::Unsupported {
            exe: exe.to_path_buf(),
            reason: format!(
                "{SECTION} holds {} bytes of a {SIZE}-byte layout",
                bytes.len()
            ),
        });
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    match u32_at(16) {
        0 => Ok(None),
        1 => Ok(Some(SampleLayout {
            tls_offset: i64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes")),
            state_current: u32_at(32),
            state_switches: u32_at(36),
            inner_id: u32_at(40),
            inner_flags: u32_at(44),
            state_origin: u32_at(48),
            inner_stack: u32_at(52),
        })),
        2 => Err(LayoutError::TlsNotStatic { pid }),
        other => Err(LayoutError::Unsupported {
            exe: exe.to_path_buf(),
            reason: format!("unknown TLS status {other}"),
        }),
    }
}

/// The file offset of the `.greenlet_sample` section of an ELF image, if it has one.
pub fn section_offset(elf_bytes: &[u8]) -> Result<Option<u64>, goblin::error::Error> {
    let elf = goblin::elf::Elf::parse(elf_bytes)?;
    Ok(elf
        .section_headers
        .iter()
        .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(SECTION))
        .map(|sh| sh.sh_offset))
}

/// Reads the sample layout of process `pid` (see [`decode`] for `None`).
pub fn read(pid: i32) -> Result<Option<SampleLayout>, LayoutError> {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LayoutError::Io { path, source }
    };
    let bytes = std::fs::read(&exe).map_err(io(&exe))?;
    let offset = section_offset(&bytes)
        .map_err(|e| LayoutError::Unsupported {
            exe: exe.clone(),
            reason: format!("not an ELF executable: {e}"),
        })?
        .ok_or_else(|| LayoutError::NotPublished {
            exe: exe.read_link().unwrap_or(exe.clone()),
        })?;
    let inode = std::fs::metadata(&exe).map_err(io(&exe))?.ino();
    let maps_path = PathBuf::from(format!("/proc/{pid}/maps"));
    let maps: Vec<Mapping> = std::fs::read_to_string(&maps_path)
        .map_err(io(&maps_path))?
        .lines()
        .filter_map(parse_maps_line)
        .collect();
    let addr = address_of(&maps, inode, offset).ok_or_else(|| LayoutError::Unsupported {
        exe: exe.clone(),
        reason: format!("{SECTION} is not mapped writable in process {pid}"),
    })?;
    let mem_path = PathBuf::from(format!("/proc/{pid}/mem"));
    let mem = File::open(&mem_path).map_err(io(&mem_path))?;
    // The header first: a layout of another version may be shorter than this one's.
    let mut buf = [0u8; SIZE];
    mem.read_exact_at(&mut buf[..HEADER], addr)
        .map_err(io(&mem_path))?;
    check_header(&buf[..HEADER], &exe)?;
    mem.read_exact_at(&mut buf, addr).map_err(io(&mem_path))?;
    decode(&buf, pid, &exe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(status: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&(SIZE as u32).to_le_bytes());
        b.extend_from_slice(&status.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(-0x48i64).to_le_bytes());
        for v in [8u32, 16, 24, 32, 40, 48] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn decodes_a_published_layout() {
        let exe = Path::new("/x");
        assert_eq!(decode(&published(0), 1, exe).unwrap(), None);
        assert_eq!(
            decode(&published(1), 1, exe).unwrap(),
            Some(SampleLayout {
                tls_offset: -0x48,
                state_current: 8,
                state_switches: 16,
                inner_id: 24,
                inner_flags: 32,
                state_origin: 40,
                inner_stack: 48,
            })
        );
        assert!(matches!(
            decode(&published(2), 7, exe),
            Err(LayoutError::TlsNotStatic { pid: 7 })
        ));
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        let exe = Path::new("/x");
        let mut wrong_magic = published(1);
        wrong_magic[0] = b'X';
        assert!(decode(&wrong_magic, 1, exe).is_err());
        // A runtime of layout version 1 (48 bytes, before the switch window's fields): refused
        // in one message that says what to do, from its header alone.
        let mut v1 = published(1);
        v1[8] = 1;
        v1[12..16].copy_from_slice(&48u32.to_le_bytes());
        v1.truncate(48);
        let e = decode(&v1, 1, exe).unwrap_err().to_string();
        assert_eq!(
            e,
            "/x: sample layout version 1 (48 bytes); this gltop reads version 2 (56 bytes): \
             it was built with an older greenlet runtime: rebuild it"
        );
        assert!(check_header(&v1[..HEADER], exe).is_err());
        let mut v3 = published(1);
        v3[8] = 3;
        let e = decode(&v3, 1, exe).unwrap_err().to_string();
        assert!(e.contains("version 3") && e.contains("older than"), "{e}");
        let mut wrong_size = published(1);
        wrong_size[12] = 48;
        assert!(decode(&wrong_size, 1, exe).is_err());
        assert!(check_header(&published(1)[..HEADER], exe).is_ok());
        let e = decode(&published(1)[..48], 1, exe).unwrap_err().to_string();
        assert!(e.contains("48 bytes of a 56-byte layout"), "{e}");
        assert!(decode(&published(9), 1, exe).is_err());
    }

    #[test]
    fn the_rust_mirror_has_the_c_size() {
        // `struct gl_layout` in bpf/sample.h: s64 + 6 x u32.
        assert_eq!(std::mem::size_of::<SampleLayout>(), 32);
    }
}
