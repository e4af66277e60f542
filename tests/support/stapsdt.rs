//! Reading the SystemTap SDT notes (`.note.stapsdt`) of an ELF binary with goblin, and the
//! address of a probe's semaphore in a running process.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use goblin::elf::program_header::PT_LOAD;
use goblin::elf::Elf;

/// One probe site, as its note describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeNote {
    pub provider: String,
    pub name: String,
    /// Link-time address of the probe's `nop`.
    pub pc: u64,
    /// Link-time address of `.stapsdt.base`.
    pub base: u64,
    /// Link-time address of the is-enabled semaphore (0: none).
    pub semaphore: u64,
    /// The argument specs, e.g. `8@%rdi`.
    pub args: Vec<String>,
}

impl ProbeNote {
    /// Argument sizes in bytes (negative: signed), from the `SIZE@LOCATION` specs.
    pub fn arg_sizes(&self) -> Vec<i32> {
        self.args
            .iter()
            .map(|spec| {
                let (size, _) = spec
                    .split_once('@')
                    .unwrap_or_else(|| panic!("argument spec {spec:?} has no '@'"));
                size.parse()
                    .unwrap_or_else(|_| panic!("argument spec {spec:?} has no size"))
            })
            .collect()
    }
}

/// The type of a SystemTap SDT note (owner "stapsdt").
const NT_STAPSDT: u32 = 3;

/// Every probe note of the ELF file `bytes`.
pub fn probe_notes(bytes: &[u8]) -> Vec<ProbeNote> {
    let elf = Elf::parse(bytes).expect("an ELF file");
    let Some(notes) = elf.iter_note_sections(bytes, Some(".note.stapsdt")) else {
        return Vec::new();
    };
    notes
        .map(|note| note.expect("a well-formed note"))
        .filter(|note| note.name == "stapsdt" && note.n_type == NT_STAPSDT)
        .map(|note| parse_desc(note.desc))
        .collect()
}

fn parse_desc(desc: &[u8]) -> ProbeNote {
    assert!(
        desc.len() > 24,
        "a stapsdt note too short: {} bytes",
        desc.len()
    );
    let word = |i: usize| u64::from_le_bytes(desc[i * 8..i * 8 + 8].try_into().unwrap());
    let mut strings = desc[24..]
        .split(|&b| b == 0)
        .map(|s| String::from_utf8(s.to_vec()).expect("UTF-8 in a stapsdt note"));
    let provider = strings.next().expect("provider");
    let name = strings.next().expect("probe name");
    let args = strings.next().unwrap_or_default();
    ProbeNote {
        provider,
        name,
        pc: word(0),
        base: word(1),
        semaphore: word(2),
        args: args.split_whitespace().map(str::to_string).collect(),
    }
}

/// The address of link-time address `vaddr` of `binary` in process `pid`: the load bias
/// (where the mapping of file offset 0 starts, minus the link-time address of the segment
/// that maps file offset 0) plus `vaddr`.
pub fn runtime_address(pid: u32, binary: &Path, bytes: &[u8], vaddr: u64) -> u64 {
    let elf = Elf::parse(bytes).expect("an ELF file");
    let first_load = elf
        .program_headers
        .iter()
        .find(|ph| ph.p_type == PT_LOAD && ph.p_offset == 0)
        .map(|ph| ph.p_vaddr)
        .expect("a loadable segment at file offset 0");
    let binary = std::fs::canonicalize(binary).expect("the binary's path");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("/proc/PID/maps");
    let start = maps
        .lines()
        .find_map(|line| {
            // start-end perms offset dev inode path
            let fields: Vec<&str> = line.split_whitespace().collect();
            let path = fields.get(5)?;
            let offset = u64::from_str_radix(fields[2], 16).ok()?;
            (Path::new(path) == binary && offset == 0).then(|| {
                let (start, _) = fields[0].split_once('-').expect("an address range");
                u64::from_str_radix(start, 16).expect("a hex address")
            })
        })
        .unwrap_or_else(|| panic!("{} is not mapped in process {pid}", binary.display()));
    start - first_load + vaddr
}

/// Reads the 16-bit semaphore at `address` in process `pid`.
pub fn read_semaphore(pid: u32, address: u64) -> u16 {
    let mut mem = File::open(format!("/proc/{pid}/mem")).expect("/proc/PID/mem");
    mem.seek(SeekFrom::Start(address)).expect("seek");
    let mut bytes = [0_u8; 2];
    mem.read_exact(&mut bytes).expect("read the semaphore");
    u16::from_ne_bytes(bytes)
}
