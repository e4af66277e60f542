//! The sampling contract (`greenlet::sample`, `/work/notes`' sample-spec): a sampler that knows
//! only the thread pointer and the 56 bytes of the `.greenlet_sample` section finds the running
//! greenlet's id, its idle bit, the thread's switch counter, the last transfer's origin, and
//! the bounds of each one's stack (which hold the stack of the code running on it).
//!
//! - the layout read back through the section of this very test binary, at the address a
//!   loader computes from `/proc/self/maps`, from `/proc/self/mem`;
//! - raw reads from the thread pointer on two threads, checked against the runtime's API;
//! - the section in a stripped copy of a built binary.

#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

mod support;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::Ordering;

use goblin::elf::program_header::PT_LOAD;
use goblin::elf::section_header::{SHF_ALLOC, SHF_WRITE};
use goblin::elf::Elf;
use greenlet::sample::{SampleLayout, FLAG_IDLE, SAMPLE_LAYOUT, TLS_VALID};
use greenlet::{getcurrent, Greenlet};

/// The layout's fields, decoded from its 48 little-endian bytes (what a loader does).
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    magic: [u8; 8],
    version: u32,
    size: u32,
    tls_status: u32,
    reserved: u32,
    tls_offset: i64,
    state_current: u32,
    state_switches: u32,
    inner_id: u32,
    inner_flags: u32,
    state_origin: u32,
    inner_stack: u32,
}

fn decode(bytes: &[u8]) -> Decoded {
    assert_eq!(bytes.len(), 56, "the layout is 56 bytes");
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    Decoded {
        magic: bytes[0..8].try_into().unwrap(),
        version: u32_at(8),
        size: u32_at(12),
        tls_status: u32_at(16),
        reserved: u32_at(20),
        tls_offset: i64::from_le_bytes(bytes[24..32].try_into().unwrap()),
        state_current: u32_at(32),
        state_switches: u32_at(36),
        inner_id: u32_at(40),
        inner_flags: u32_at(44),
        state_origin: u32_at(48),
        inner_stack: u32_at(52),
    }
}

/// The static's own fields, in the same shape.
fn expected(layout: &SampleLayout) -> Decoded {
    Decoded {
        magic: layout.magic,
        version: layout.version,
        size: layout.size,
        tls_status: layout.tls_status.load(Ordering::Acquire),
        reserved: layout._reserved,
        tls_offset: layout.tls_offset.load(Ordering::Acquire),
        state_current: layout.state_current,
        state_switches: layout.state_switches,
        inner_id: layout.inner_id,
        inner_flags: layout.inner_flags,
        state_origin: layout.state_origin,
        inner_stack: layout.inner_stack,
    }
}

/// The one `.greenlet_sample` section of an ELF file: (address, file offset, size, flags).
fn sample_section(elf: &Elf<'_>) -> (u64, u64, u64, u64) {
    let found: Vec<_> = elf
        .section_headers
        .iter()
        .filter(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(".greenlet_sample"))
        .collect();
    assert_eq!(found.len(), 1, "exactly one .greenlet_sample section");
    let sh = found[0];
    (sh.sh_addr, sh.sh_offset, sh.sh_size, sh.sh_flags)
}

fn read_mem(address: u64, len: usize) -> Vec<u8> {
    let mut mem = File::open("/proc/self/mem").expect("/proc/self/mem");
    mem.seek(SeekFrom::Start(address)).expect("seek");
    let mut bytes = vec![0_u8; len];
    mem.read_exact(&mut bytes).expect("read /proc/self/mem");
    bytes
}

/// The calling thread's thread pointer (`fs:0`), read here independently of the runtime.
fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: on x86-64 Linux `fs` points to the thread control block, whose first word is its
    // own address; the load reads it and touches nothing else.
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags));
    }
    tp
}

/// What a sampler sees on the calling thread: (state pointer, current id, idle, switches);
/// `None` when the thread has no runtime state.
fn sampled(layout: &Decoded) -> Option<(u64, u64, bool, u64)> {
    assert_eq!(layout.tls_status, TLS_VALID);
    let slot = thread_pointer().wrapping_add_signed(layout.tls_offset);
    // SAFETY: `slot` is the address of the runtime's thread-local state pointer on this thread
    // (what the contract says `tls_offset` gives): a live, aligned word of this thread's TLS.
    let state = unsafe { std::ptr::read_volatile(slot as *const u64) };
    if state == 0 {
        return None;
    }
    let word = |address: u64| {
        // SAFETY: the addresses below are fields of this thread's live state and of its running
        // greenlet (which the state keeps alive while it is current), at the published
        // offsets; this thread is the one running, so neither changes during the read.
        unsafe { std::ptr::read_volatile(address as *const u64) }
    };
    let current = word(state + u64::from(layout.state_current));
    let id = word(current + u64::from(layout.inner_id));
    let switches = word(state + u64::from(layout.state_switches));
    // SAFETY: as above: the flag byte of the running greenlet.
    let flags =
        unsafe { std::ptr::read_volatile((current + u64::from(layout.inner_flags)) as *const u8) };
    Some((state, id, flags & FLAG_IDLE != 0, switches))
}

#[test]
fn the_section_of_this_binary_holds_the_layout_at_the_loaders_address() {
    getcurrent(); // a thread state exists: tls_offset is known
    let exe = std::fs::read_link("/proc/self/exe").expect("/proc/self/exe");
    let bytes = std::fs::read(&exe).expect("read the test binary");
    let elf = Elf::parse(&bytes).expect("an ELF file");
    let (addr, _, size, flags) = sample_section(&elf);
    assert_eq!(size, 56);
    assert_eq!(flags & (SHF_ALLOC as u64), SHF_ALLOC as u64, "loaded");
    assert_eq!(flags & (SHF_WRITE as u64), SHF_WRITE as u64, "writable");
    let runtime = support::stapsdt::runtime_address(std::process::id(), &exe, &bytes, addr);
    assert_eq!(
        runtime,
        std::ptr::from_ref(&SAMPLE_LAYOUT) as u64,
        "the section's runtime address is the static's"
    );
    let decoded = decode(&read_mem(runtime, 56));
    assert_eq!(&decoded.magic, b"GRNLTSMP");
    assert_eq!((decoded.version, decoded.size), (2, 56));
    assert_eq!(decoded.tls_status, TLS_VALID);
    assert!(
        decoded.tls_offset < 0,
        "x86-64 TLS lies below the thread pointer"
    );
    assert_eq!(decoded, expected(&SAMPLE_LAYOUT));
}

/// On one thread: no state before the runtime's first use; then main's id; a child's id and
/// idle bit while it runs; the counter +1 per transfer.
fn check_this_thread(layout: &Decoded) -> (u64, u64) {
    assert_eq!(sampled(layout), None, "a fresh thread has no runtime state");
    let main = getcurrent();
    let (_, id, idle, start) = sampled(layout).expect("a state after getcurrent");
    assert_eq!((id, idle), (main.id(), false));

    let back = main.clone();
    let child = Greenlet::builder().idle(true).build(move |_| {
        let (_, id, idle, n) = sampled(&layout_now()).unwrap();
        assert_eq!((id, idle), (getcurrent().id(), true));
        getcurrent().set_idle(false);
        let (_, _, idle, _) = sampled(&layout_now()).unwrap();
        assert!(!idle, "set_idle(false) clears the bit");
        back.switch(n)?;
        Ok(())
    });
    let in_child = child.switch(()).unwrap().downcast::<u64>().unwrap();
    assert_eq!(in_child, start + 1, "one transfer main -> child");
    let (_, id, _, now) = sampled(layout).unwrap();
    assert_eq!(id, main.id(), "main is current again");
    assert_eq!(now, start + 2, "and child -> main");
    child.switch(()).unwrap(); // the child finishes: its result goes to main
    let (_, _, _, end) = sampled(layout).unwrap();
    assert_eq!(end, start + 4);
    main.set_idle(true);
    assert!(sampled(layout).unwrap().2, "main marked idle");
    main.set_idle(false);
    (main.id(), child.id())
}

fn layout_now() -> Decoded {
    expected(&SAMPLE_LAYOUT)
}

#[test]
fn raw_reads_from_the_thread_pointer_find_the_current_greenlet_on_two_threads() {
    getcurrent();
    let layout = layout_now();
    let ids: Vec<(u64, u64)> = (0..2)
        .map(|_| std::thread::spawn(|| check_this_thread(&layout_now())))
        .map(|t| t.join().expect("the thread's checks passed"))
        .collect();
    assert_ne!(ids[0], ids[1], "two threads, two sets of greenlets");
    // The offset was the same on every thread (and checked by each new thread state).
    assert_eq!(layout_now(), layout);
    assert_eq!(layout_now().tls_status, TLS_VALID);
}

/// What a sampler reads of the greenlet at `g` (an `Inner` address): (id, [low, high) of its
/// stack).
fn greenlet_at(layout: &Decoded, g: u64) -> (u64, (u64, u64)) {
    let word = |address: u64| {
        // SAFETY: `g` is the address of a live greenlet of this thread (the current one, or the
        // origin of a transfer that arrived while the caller holds a handle on it); the words
        // read are its id and its stack bounds, at the published offsets.
        unsafe { std::ptr::read_volatile(address as *const u64) }
    };
    let stack = g + u64::from(layout.inner_stack);
    (
        word(g + u64::from(layout.inner_id)),
        (word(stack), word(stack + 8)),
    )
}

/// The running greenlet and the last transfer's origin as a sampler reads them: (current,
/// origin), each as [`greenlet_at`] gives it.
type Pair = ((u64, (u64, u64)), (u64, (u64, u64)));

fn current_and_origin(layout: &Decoded) -> Pair {
    let (state, _, _, _) = sampled(layout).expect("a thread state");
    let word = |address: u64| {
        // SAFETY: fields of this thread's live state, at the published offsets.
        unsafe { std::ptr::read_volatile(address as *const u64) }
    };
    let current = word(state + u64::from(layout.state_current));
    let origin = word(state + u64::from(layout.state_origin));
    (greenlet_at(layout, current), greenlet_at(layout, origin))
}

/// The address the thread state's `origin` holds.
fn origin_address(layout: &Decoded) -> u64 {
    let (state, _, _, _) = sampled(layout).expect("a thread state");
    // SAFETY: a field of this thread's live state, at the published offset.
    unsafe { std::ptr::read_volatile((state + u64::from(layout.state_origin)) as *const u64) }
}

/// The address of a local of the caller's frame: on the stack it runs on.
#[inline(never)]
fn a_local() -> u64 {
    let local = 0_u8;
    std::hint::black_box(std::ptr::from_ref(&local)) as u64
}

fn holds((low, high): (u64, u64), address: u64) -> bool {
    low < high && low <= address && address < high
}

#[test]
fn the_published_stack_bounds_hold_the_running_greenlets_stack() {
    getcurrent();
    let layout = layout_now();
    let main = getcurrent();
    // The main greenlet runs on its thread's stack, which the runtime found.
    let (here, _) = current_and_origin(&layout);
    assert_eq!(here.0, main.id());
    assert!(
        holds(here.1, a_local()),
        "main's bounds {:x?} hold a local of main's frame",
        here.1
    );

    let main_bounds = here.1;
    let back = main.clone();
    let child = Greenlet::builder().stack_size(64 << 10).build(move |_| {
        // On the child's stack: its bounds hold this frame, not main's; the origin is main.
        let (current, origin) = current_and_origin(&layout_now());
        let local = a_local();
        assert_eq!(current.0, getcurrent().id());
        assert!(holds(current.1, local), "{:x?} holds {local:x}", current.1);
        assert!(
            !holds(main_bounds, local),
            "a child's frame on main's stack"
        );
        assert_eq!(
            current.1 .1 - current.1 .0,
            64 << 10,
            "the usable size asked for"
        );
        assert_eq!(origin, (back.id(), main_bounds), "main sent the transfer");
        back.switch(current)?;
        // Resumed by main a second time: the same stack.
        let (again, _) = current_and_origin(&layout_now());
        back.switch(again)?;
        Ok(())
    });
    let in_child = child.switch(()).unwrap().downcast::<(u64, (u64, u64))>();
    let (child_id, child_bounds) = in_child.unwrap();
    assert_eq!(child_id, child.id());
    // Back on main: main is current, the child is the origin, with the bounds it ran in.
    let (current, origin) = current_and_origin(&layout);
    assert_eq!(current, (main.id(), main_bounds));
    assert_eq!(origin, (child.id(), child_bounds));
    assert!(
        !holds(child_bounds, a_local()),
        "main's frame in the child's stack"
    );
    let again = child.switch(()).unwrap().downcast::<(u64, (u64, u64))>();
    assert_eq!(again.unwrap(), (child.id(), child_bounds));
    // Read in place as well, from the address the state's origin gives: the bounds the
    // child's `Inner` holds while it is suspended.
    assert_eq!(
        greenlet_at(&layout, origin_address(&layout)).1,
        child_bounds
    );
    child.switch(()).unwrap(); // it finishes
    assert!(child.is_dead());
}

#[test]
fn the_section_survives_strip() {
    if !support::require("the strip test", support::tool("strip", "--version")) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("greenlet-strip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("stripped");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    let status = std::process::Command::new("strip")
        .arg(&copy)
        .status()
        .expect("run strip");
    assert!(status.success(), "strip failed: {status}");
    let bytes = std::fs::read(&copy).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let elf = Elf::parse(&bytes).expect("an ELF file");
    assert!(
        elf.syms.is_empty(),
        "strip removed .symtab ({} symbols left)",
        elf.syms.len()
    );
    let (addr, offset, size, _) = sample_section(&elf);
    assert_eq!(size, 56);
    // It is loaded: some PT_LOAD segment maps its file bytes at its address.
    assert!(
        elf.program_headers.iter().any(|ph| ph.p_type == PT_LOAD
            && ph.p_offset <= offset
            && offset + size <= ph.p_offset + ph.p_filesz
            && ph.p_vaddr + (offset - ph.p_offset) == addr),
        "a loadable segment maps the section"
    );
    let decoded = decode(&bytes[offset as usize..(offset + size) as usize]);
    // In the file, before any thread state: status 0, offset unknown.
    let mut want = layout_now();
    want.tls_status = 0;
    want.tls_offset = 0;
    assert_eq!(decoded, want);
}
