//! Reading the `greenlet` USDT probe sites from an executable's `.note.stapsdt` notes.
//!
//! The loader needs them for two things: to tell "a process without greenlet probes" apart
//! from other failures, and to attach the cheap register-reading uprobes at each call site
//! (with the probe's semaphore as the uprobe's reference counter) when the argument layout
//! allows it.

use std::path::Path;

use goblin::elf::program_header::{PF_X, PT_LOAD};
use goblin::elf::{section_header::SHT_NOBITS, Elf};

use super::Error;

/// The USDT provider this crate's probes belong to.
pub const PROVIDER: &str = greenlet::probes::PROVIDER;

/// The integer argument registers of the C calling convention, in order: the `usdt` crate
/// passes probe argument i in register i, so a site whose arguments sit there can be read
/// by a plain uprobe.
#[cfg(target_arch = "x86_64")]
const ABI_REGS: [&str; 6] = ["rdi", "rsi", "rdx", "rcx", "r8", "r9"];
#[cfg(target_arch = "aarch64")]
const ABI_REGS: [&str; 6] = ["x0", "x1", "x2", "x3", "x4", "x5"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ABI_REGS: [&str; 0] = [];

/// One probe call site of an executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSite {
    /// Provider name (`greenlet` for ours).
    pub provider: String,
    /// Probe name: `switch`, `throw`, `new` or `dead`.
    pub name: String,
    /// File offset of the probe instruction: where a uprobe goes.
    pub file_offset: u64,
    /// File offset of the probe's is-enabled semaphore, if it has one.
    pub semaphore_offset: Option<u64>,
    /// Argument specifications, e.g. `8@%rdi`.
    pub args: Vec<ArgSpec>,
}

/// Where one probe argument lives at the call site, as written in the note (`SIZE@LOCATION`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgSpec {
    /// Size in bytes; negative for a signed value.
    pub size: i8,
    /// The location: `%rdi`, `-8(%rbp)`, `$5`, `x0`, ...
    pub location: String,
}

impl ArgSpec {
    /// Parses one `SIZE@LOCATION` token.
    pub fn parse(token: &str) -> Option<ArgSpec> {
        let (size, location) = token.split_once('@')?;
        let size: i8 = size.parse().ok()?;
        if size == 0 || location.is_empty() {
            return None;
        }
        Some(ArgSpec {
            size,
            location: location.to_string(),
        })
    }

    /// The register this argument is in, without `%`, if it is a plain register.
    pub fn register(&self) -> Option<&str> {
        let reg = self.location.strip_prefix('%').unwrap_or(&self.location);
        let plain = !reg.is_empty() && reg.chars().all(|c| c.is_ascii_alphanumeric());
        (plain && !self.location.starts_with('$')).then_some(reg)
    }
}

/// The 64-bit register that contains `reg` (`esi`, `si` and `sil` are all in `rsi`).
fn full_register(reg: &str) -> &str {
    match reg {
        "edi" | "di" | "dil" => "rdi",
        "esi" | "si" | "sil" => "rsi",
        "edx" | "dx" | "dl" => "rdx",
        "ecx" | "cx" | "cl" => "rcx",
        "r8d" | "r8w" | "r8b" => "r8",
        "r9d" | "r9w" | "r9b" => "r9",
        "w0" => "x0",
        "w1" => "x1",
        "w2" => "x2",
        "w3" => "x3",
        "w4" => "x4",
        "w5" => "x5",
        other => other,
    }
}

/// Bytes of each argument of a `greenlet` probe, from `probes/greenlet.d`.
pub fn expected_arg_sizes(probe: &str) -> Option<&'static [u8]> {
    match probe {
        "switch" | "throw" => Some(&[8, 8]),
        "new" => Some(&[8, 8, 8]),
        "dead" => Some(&[8, 1]),
        _ => None,
    }
}

impl ProbeSite {
    /// Whether a plain uprobe reading argument i from the i-th argument register reads exactly
    /// what the probe passes: every argument is in its ABI register with the size the provider
    /// declares.
    pub fn args_in_abi_registers(&self) -> bool {
        let Some(sizes) = expected_arg_sizes(&self.name) else {
            return false;
        };
        self.args.len() == sizes.len()
            && self
                .args
                .iter()
                .zip(sizes)
                .enumerate()
                .all(|(i, (arg, &size))| {
                    let in_reg = arg
                        .register()
                        .is_some_and(|r| ABI_REGS.get(i) == Some(&full_register(r)));
                    in_reg && arg.size.unsigned_abs() == size
                })
    }
}

/// Maps the virtual address of an instruction to a file offset through the executable
/// `PT_LOAD` segments. `None` outside them: the linker leaves the notes of call sites it
/// garbage-collected, with addresses that point at nothing (often into the ELF header),
/// and a uprobe there must never be planted.
fn code_offset(elf: &Elf<'_>, vaddr: u64) -> Option<u64> {
    elf.program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD && ph.p_flags & PF_X != 0)
        .find(|ph| vaddr >= ph.p_vaddr && vaddr < ph.p_vaddr + ph.p_filesz)
        .map(|ph| vaddr - ph.p_vaddr + ph.p_offset)
}

/// Maps a semaphore's virtual address to its file offset through the section holding it
/// (what the kernel's uprobe reference counter wants).
fn semaphore_offset(elf: &Elf<'_>, vaddr: u64) -> Option<u64> {
    elf.section_headers
        .iter()
        .filter(|sh| sh.sh_type != SHT_NOBITS && sh.sh_addr != 0)
        .find(|sh| vaddr >= sh.sh_addr && vaddr < sh.sh_addr + sh.sh_size)
        .map(|sh| vaddr - sh.sh_addr + sh.sh_offset)
}

/// Splits a stapsdt note's description into (pc, base, semaphore, provider, name, args).
fn split_desc(desc: &[u8], addr_size: usize) -> Option<(u64, u64, u64, &str, &str, &str)> {
    let read = |at: usize| -> Option<u64> {
        let bytes = desc.get(at..at + addr_size)?;
        let mut buf = [0u8; 8];
        buf[..addr_size].copy_from_slice(bytes);
        Some(u64::from_le_bytes(buf))
    };
    let (pc, base, sema) = (read(0)?, read(addr_size)?, read(2 * addr_size)?);
    let mut strings = desc.get(3 * addr_size..)?.split(|&b| b == 0);
    let mut next = || std::str::from_utf8(strings.next()?).ok();
    let (provider, name, args) = (next()?, next()?, next().unwrap_or(""));
    Some((pc, base, sema, provider, name, args))
}

/// The USDT notes of an executable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeNotes {
    /// Call sites in code.
    pub sites: Vec<ProbeSite>,
    /// (provider, probe) of each note whose address lies outside the executable segments:
    /// a call site the linker garbage-collected. libbpf's USDT support refuses a probe that
    /// has any.
    pub orphans: Vec<(String, String)>,
}

/// Every USDT probe note in the ELF image `bytes`, of every provider.
pub fn probe_sites(bytes: &[u8]) -> Result<ProbeNotes, goblin::error::Error> {
    let elf = Elf::parse(bytes)?;
    if !elf.little_endian {
        return Err(goblin::error::Error::Malformed(
            "big-endian executables are not supported".into(),
        ));
    }
    let addr_size = if elf.is_64 { 8 } else { 4 };
    // Prelinking moves the image; the note records where `.stapsdt.base` was when linked.
    let actual_base = elf
        .section_headers
        .iter()
        .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(".stapsdt.base"))
        .map(|sh| sh.sh_addr);
    let mut found = ProbeNotes::default();
    let Some(notes) = elf.iter_note_sections(bytes, Some(".note.stapsdt")) else {
        return Ok(found);
    };
    for note in notes {
        let note = note?;
        if note.name != "stapsdt" || note.n_type != 3 {
            continue;
        }
        let Some((pc, base, sema, provider, name, args)) = split_desc(note.desc, addr_size) else {
            continue;
        };
        let pc = match actual_base {
            Some(actual) if base != 0 => pc.wrapping_add(actual).wrapping_sub(base),
            _ => pc,
        };
        let Some(file_offset) = code_offset(&elf, pc) else {
            found.orphans.push((provider.to_string(), name.to_string()));
            continue;
        };
        let args = args.split_whitespace().filter_map(ArgSpec::parse).collect();
        found.sites.push(ProbeSite {
            provider: provider.to_string(),
            name: name.to_string(),
            file_offset,
            semaphore_offset: (sema != 0).then(|| semaphore_offset(&elf, sema)).flatten(),
            args,
        });
    }
    Ok(found)
}

/// The `greenlet` provider's probe notes in the executable at `path`.
pub fn greenlet_sites(path: &Path) -> Result<ProbeNotes, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::from_io(e, path))?;
    let mut notes = probe_sites(&bytes).map_err(|e| Error::BadExecutable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    notes.sites.retain(|s| s.provider == PROVIDER);
    notes.orphans.retain(|(provider, _)| provider == PROVIDER);
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str, args: &str) -> ProbeSite {
        ProbeSite {
            provider: PROVIDER.into(),
            name: name.into(),
            file_offset: 0,
            semaphore_offset: None,
            args: args.split_whitespace().filter_map(ArgSpec::parse).collect(),
        }
    }

    #[test]
    fn parses_arg_specs() {
        let a = ArgSpec::parse("8@%rdi").unwrap();
        assert_eq!((a.size, a.register()), (8, Some("rdi")));
        let a = ArgSpec::parse("-4@%esi").unwrap();
        assert_eq!((a.size, a.register()), (-4, Some("esi")));
        assert_eq!(ArgSpec::parse("8@-8(%rbp)").unwrap().register(), None);
        assert_eq!(ArgSpec::parse("4@$5").unwrap().register(), None);
        assert_eq!(ArgSpec::parse("8@x0").unwrap().register(), Some("x0"));
        assert!(ArgSpec::parse("x@%rdi").is_none());
        assert!(ArgSpec::parse("8@").is_none());
        assert!(ArgSpec::parse("0@%rdi").is_none());
        assert!(ArgSpec::parse("rdi").is_none());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn abi_register_layout_is_recognised() {
        assert!(site("switch", "8@%rdi 8@%rsi").args_in_abi_registers());
        assert!(site("new", "8@%rdi 8@%rsi 8@%rdx").args_in_abi_registers());
        assert!(site("dead", "8@%rdi 1@%sil").args_in_abi_registers());
        // Swapped registers, a stack slot, a truncated id, a missing argument, an unknown probe.
        assert!(!site("switch", "8@%rsi 8@%rdi").args_in_abi_registers());
        assert!(!site("switch", "8@%rdi 8@-8(%rbp)").args_in_abi_registers());
        assert!(!site("switch", "8@%rdi 4@%esi").args_in_abi_registers());
        assert!(!site("new", "8@%rdi 8@%rsi").args_in_abi_registers());
        assert!(!site("other", "8@%rdi").args_in_abi_registers());
    }

    #[test]
    fn splits_note_descriptions() {
        let mut desc = Vec::new();
        for v in [0x1000u64, 0x2000, 0x3000] {
            desc.extend_from_slice(&v.to_le_bytes());
        }
        desc.extend_from_slice(b"greenlet\0switch\08@%rdi 8@%rsi\0");
        let got = split_desc(&desc, 8).unwrap();
        assert_eq!(
            got,
            (
                0x1000,
                0x2000,
                0x3000,
                "greenlet",
                "switch",
                "8@%rdi 8@%rsi"
            )
        );
        assert!(split_desc(&desc[..20], 8).is_none());
    }

    #[test]
    fn rejects_non_elf_bytes() {
        assert!(probe_sites(b"#!/bin/sh\necho hi\n").is_err());
    }
}
