//! The USDT notes of binaries built with the runtime (issue 3, item 1): every probe of
//! `probes/greenlet.d` has a note, with the argument sizes the provider declares and an
//! is-enabled semaphore on a page of its own. Read from the ELF file with goblin; only the last
//! test needs BPF.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use goblin::elf::program_header::{PF_W, PT_LOAD};
use goblin::elf::section_header::{SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHT_PROGBITS};
use goblin::elf::Elf;
use support::stapsdt::{probe_notes, ProbeNote};
use support::workload::{example_bin, workload_bin};

/// The probes of `probes/greenlet.d` and their argument sizes in bytes: `uint64_t` is 8,
/// `char *` a pointer (8), `uint8_t` 1; all unsigned.
const PROBES: [(&str, &[i32]); 4] = [
    ("switch", &[8, 8]),
    ("throw", &[8, 8]),
    ("new", &[8, 8, 8]),
    ("dead", &[8, 1]),
];

/// The probe notes of a program: the runtime's example `tracing`, or the test oracle
/// `workload` (a binary of the `greenlet-workloads` package).
fn notes_of(program: &str) -> (Vec<u8>, Vec<ProbeNote>) {
    let bin = match program {
        "workload" => workload_bin(),
        example => example_bin(example),
    };
    let bytes = std::fs::read(bin).expect("read the program's binary");
    let notes = probe_notes(&bytes);
    (bytes, notes)
}

fn check_probe_set(example: &str) {
    let (_, notes) = notes_of(example);
    assert!(!notes.is_empty(), "{example}: no .note.stapsdt notes");
    let names: BTreeSet<&str> = notes.iter().map(|n| n.name.as_str()).collect();
    let expected: BTreeSet<&str> = PROBES.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, expected, "{example}: the probes in .note.stapsdt");
    for note in &notes {
        assert_eq!(note.provider, "greenlet", "{example}: {note:?}");
        let sizes = PROBES.iter().find(|(n, _)| *n == note.name).unwrap().1;
        assert_eq!(
            note.arg_sizes(),
            sizes,
            "{example}: argument sizes of {note:?}"
        );
    }
}

#[test]
fn the_workload_lists_the_four_probes_with_their_argument_sizes() {
    check_probe_set("workload");
}

#[test]
fn the_tracing_example_lists_the_four_probes_too() {
    check_probe_set("tracing");
}

#[test]
fn each_probe_has_one_semaphore_in_writable_data_and_sites_in_code() {
    let (bytes, notes) = notes_of("workload");
    let elf = Elf::parse(&bytes).expect("ELF");
    let section_of = |addr: u64| {
        elf.section_headers
            .iter()
            .find(|s| {
                s.sh_flags & u64::from(SHF_ALLOC) != 0 && s.vm_range().contains(&(addr as usize))
            })
            .unwrap_or_else(|| panic!("no allocated section holds {addr:#x}"))
    };
    let base = elf
        .section_headers
        .iter()
        .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(".stapsdt.base"))
        .expect("a .stapsdt.base section");

    let mut semaphores: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for note in &notes {
        semaphores
            .entry(&note.name)
            .or_default()
            .insert(note.semaphore);
        assert_eq!(note.base, base.sh_addr, "{note:?}: base is .stapsdt.base");
        let code = section_of(note.pc);
        assert!(
            code.sh_flags & u64::from(SHF_EXECINSTR) != 0,
            "{note:?}: the probe site is not in code"
        );
        // The site is the usdt crate's one-byte nop, which a uprobe replaces with int3.
        let file_offset = (note.pc - code.sh_addr + code.sh_offset) as usize;
        assert_eq!(
            bytes[file_offset], 0x90,
            "{note:?}: the probe site is not a nop"
        );
    }
    let mut all = BTreeSet::new();
    for (name, set) in &semaphores {
        assert_eq!(
            set.len(),
            1,
            "every site of greenlet:{name} shares one semaphore"
        );
        let sema = *set.first().unwrap();
        assert_ne!(sema, 0, "greenlet:{name} has no semaphore");
        assert!(
            all.insert(sema),
            "greenlet:{name} shares its semaphore with another probe"
        );
        let data = section_of(sema);
        assert_eq!(
            data.sh_type, SHT_PROGBITS,
            "greenlet:{name}: semaphore section type"
        );
        assert!(
            data.sh_flags & u64::from(SHF_WRITE) != 0,
            "greenlet:{name}: the semaphore is not writable"
        );
    }
}

/// The kernel finds a semaphore by its file offset, in the first writable mapping of the file
/// that covers it. If another writable segment's mapping also covers that file page (rust-lld
/// can put the end of RELRO and the start of the data on one page), a process started after a
/// tracer attached gets the wrong copy incremented and its probes never fire.
fn check_semaphore_pages(example: &str) {
    const PAGE: u64 = 4096;
    let (bytes, notes) = notes_of(example);
    let elf = Elf::parse(&bytes).expect("ELF");
    let writable: Vec<_> = elf
        .program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD && ph.p_flags & PF_W != 0)
        .collect();
    for note in &notes {
        let home = writable
            .iter()
            .find(|ph| (ph.p_vaddr..ph.p_vaddr + ph.p_filesz).contains(&note.semaphore))
            .unwrap_or_else(|| panic!("{example}: {note:?}: semaphore outside writable file data"));
        let file_page = (note.semaphore - home.p_vaddr + home.p_offset) / PAGE;
        for other in writable.iter().filter(|ph| !std::ptr::eq(**ph, *home)) {
            let first = other.p_offset / PAGE;
            let last = (other.p_offset + other.p_filesz).div_ceil(PAGE);
            assert!(
                !(first..last).contains(&file_page),
                "{example}: the page of greenlet:{}'s semaphore is also mapped by the \
                 writable segment at {:#x}",
                note.name,
                other.p_vaddr
            );
        }
    }
}

#[test]
fn semaphores_sit_on_pages_only_the_data_segment_maps() {
    check_semaphore_pages("workload");
    check_semaphore_pages("tracing");
}

#[test]
fn the_tracing_example_fires_its_probes_when_started_under_bpftrace() {
    // examples/tracing is the binary whose layout put its semaphores on a shared page.
    if !support::bpftrace::available(
        "the_tracing_example_fires_its_probes_when_started_under_bpftrace",
    ) {
        return;
    }
    let _serial = support::serial();
    let bin = example_bin("tracing").display().to_string();
    let args: Vec<String> = vec![
        "-f".into(),
        "json".into(),
        "-c".into(),
        bin.clone(),
        "-e".into(),
        "BEGIN { printf(\"attached\\n\"); } usdt:$1:greenlet:switch { @switch = count(); } \
         usdt:$1:greenlet:new { @new = count(); }"
            .into(),
        bin,
    ];
    let out = support::bpftrace::Bpftrace::spawn(&args).finish();
    // The example's transcript: five transfers; main, origin and target.
    assert_eq!(out.map("@switch").values().sum::<i64>(), 5);
    assert_eq!(out.map("@new").values().sum::<i64>(), 3);
    assert!(
        out.other.iter().any(|l| l.starts_with("Transfer from")),
        "{:?}",
        out.other
    );
}
