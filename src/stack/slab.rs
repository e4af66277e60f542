//! Slabs: large anonymous mappings carved into guarded stack slots, and the lock-free
//! registry of them that the overflow handler reads.
//!
//! A slab of one size class looks like this (addresses grow to the right):
//!
//! ```text
//! | owner table | guard | stack 0 ... | guard | stack 1 ... | ... | guard | stack n-1 ... |
//!   64 B a slot  1 page   class size
//! ```
//!
//! The whole slab is one `mmap(PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE)`.
//! Slots are carved lazily (a bump index under the class lock); carving installs the slot's
//! guard page, with `madvise(MADV_GUARD_INSTALL)` where the kernel has it (Linux 6.13+: a page
//! table marker, so the slab stays one kernel mapping) or else with `mprotect(PROT_NONE)`
//! (which splits the mapping: two kernel mappings per stack, as with one mapping per stack).
//! Slabs and slots are never unmapped: a slot lives in a free list when no greenlet uses it,
//! and trimming gives its memory back with `MADV_DONTNEED` while keeping the address range.

// Unsafe code: `mmap`, `madvise` and `mprotect` on the slabs, the owner table made from a
// slab's first pages, and the slab registry's pointers (read from the signal handler).
#![allow(unsafe_code)]

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use corosensei::stack::valgrind::ValgrindStackRegistration;
use nix::sys::mman::{self, MapFlags, MmapAdvise, ProtFlags};

/// `MADV_GUARD_INSTALL` from `<linux/mman.h>` (Linux 6.13+); not in `libc` 0.2.191 or nix 0.29.
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Smallest size class, as a power of two: 16 KiB.
pub(crate) const MIN_CLASS_SHIFT: u32 = 14;
/// Largest size class, as a power of two: 1 TiB (of address space; only touched pages cost).
pub(crate) const MAX_CLASS_SHIFT: u32 = 40;
/// Number of size classes.
pub(crate) const NCLASSES: usize = (MAX_CLASS_SHIFT - MIN_CLASS_SHIFT + 1) as usize;

/// Address space a slab aims at; a class whose stride exceeds it gets one slot per slab.
const SLAB_TARGET_BYTES: usize = 256 << 20;
/// Capacity of the slab registry. At 256 MiB a slab this is 16 TiB of stacks.
const MAX_SLABS: usize = 1 << 16;
/// Bytes of owner metadata kept for every slot (one cache line, so that threads writing the
/// owners of neighbouring slots do not share a line).
const OWNER_BYTES: usize = 64;
/// Words of name in an owner record (after the id and the tag).
const NAME_WORDS: usize = OWNER_BYTES / 8 - 2;
/// Longest greenlet name kept for the overflow message, in bytes.
pub(crate) const NAME_CAP: usize = 8 * NAME_WORDS;

/// How guard pages are made. Chosen once per process, at the first slab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardMode {
    /// `madvise(MADV_GUARD_INSTALL)`: a slab stays one kernel mapping.
    GuardInstall,
    /// `mprotect(PROT_NONE)`: every stack costs two kernel mappings (kernels before 6.13).
    Mprotect,
}

const MODE_UNDECIDED: u8 = 0;
const MODE_GUARD_INSTALL: u8 = 1;
const MODE_MPROTECT: u8 = 2;
const MODE_FORCE_MPROTECT: u8 = 3;
static MODE: AtomicU8 = AtomicU8::new(MODE_UNDECIDED);

/// The guard mode in use, once the first slab exists.
pub(crate) fn guard_mode() -> Option<GuardMode> {
    match MODE.load(Ordering::Acquire) {
        MODE_GUARD_INSTALL => Some(GuardMode::GuardInstall),
        MODE_MPROTECT => Some(GuardMode::Mprotect),
        _ => None,
    }
}

/// Makes the process use `mprotect` guards even where `MADV_GUARD_INSTALL` works (to test the
/// fallback). Only possible before the first slab: returns whether it took effect.
pub(crate) fn force_mprotect_guards() -> bool {
    let _ = MODE.compare_exchange(
        MODE_UNDECIDED,
        MODE_FORCE_MPROTECT,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    matches!(
        MODE.load(Ordering::Acquire),
        MODE_FORCE_MPROTECT | MODE_MPROTECT
    )
}

/// The system page size (cached).
pub(crate) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => 4096,
    };
    assert!(
        page.is_power_of_two(),
        "page size {page} is not a power of two"
    );
    PAGE.store(page, Ordering::Relaxed);
    page
}

/// Who is using a slot: written by the owning thread, read by the overflow handler.
///
/// All fields are atomics so that a handler reading them while another thread writes is not a
/// data race. `tag` holds the name length (bits 0-5), "has a name" (bit 6) and "name was cut"
/// (bit 7); `name` holds the name's bytes, little-endian, 8 to a word. Bytes past the length
/// are never read, so a shorter name need not clear the words a longer one used.
#[repr(C, align(64))]
#[derive(Default)]
pub(crate) struct SlotOwner {
    id: AtomicU64,
    tag: AtomicU64,
    name: [AtomicU64; NAME_WORDS],
}

const _: () = assert!(std::mem::size_of::<SlotOwner>() == OWNER_BYTES);

const TAG_HAS_NAME: u64 = 0x40;
const TAG_TRUNCATED: u64 = 0x80;
const TAG_LEN: u64 = 0x3f;

impl SlotOwner {
    /// Records the owning greenlet. The name is copied (cut at `NAME_CAP` bytes, on a UTF-8
    /// character boundary), so it need not outlive the call.
    #[inline]
    pub(crate) fn set(&self, id: u64, name: Option<&str>) {
        self.id.store(0, Ordering::Relaxed);
        let tag = match name {
            // The common case, inline: no name, nothing to copy.
            None => 0,
            Some(name) => self.copy_name(name),
        };
        self.tag.store(tag, Ordering::Relaxed);
        self.id.store(id, Ordering::Release);
    }

    /// Copies `name` into the record (cut at `NAME_CAP` bytes) and returns its tag. `set`
    /// calls it between clearing the id and publishing the new one, so a reader never pairs
    /// the new id with a half-written name.
    #[inline(never)]
    fn copy_name(&self, name: &str) -> u64 {
        let mut len = name.len();
        let mut tag = TAG_HAS_NAME;
        if len > NAME_CAP {
            len = NAME_CAP;
            while !name.is_char_boundary(len) {
                len -= 1;
            }
            tag |= TAG_TRUNCATED;
        }
        let bytes = &name.as_bytes()[..len];
        let mut chunks = bytes.chunks_exact(8);
        let mut words = self.name.iter();
        for (chunk, word) in (&mut chunks).zip(&mut words) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            word.store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
        let rest = chunks.remainder();
        if let (false, Some(word)) = (rest.is_empty(), words.next()) {
            let v = rest
                .iter()
                .enumerate()
                .fold(0u64, |v, (i, &b)| v | (b as u64) << (8 * i));
            word.store(v, Ordering::Relaxed);
        }
        tag | len as u64
    }

    /// Marks the slot as unowned.
    #[inline]
    pub(crate) fn clear(&self) {
        self.id.store(0, Ordering::Release);
    }

    /// Reads the owner: `(id, name buffer, name length, cut)`; `id` 0 means unowned and a
    /// length of `None` means no name. Async-signal-safe (atomic loads only).
    pub(crate) fn read(&self) -> (u64, [u8; NAME_CAP], Option<usize>, bool) {
        let id = self.id.load(Ordering::Acquire);
        let tag = self.tag.load(Ordering::Relaxed);
        let mut bytes = [0u8; NAME_CAP];
        for (word, chunk) in self.name.iter().zip(bytes.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        let len = (tag & TAG_HAS_NAME != 0).then_some(((tag & TAG_LEN) as usize).min(NAME_CAP));
        (id, bytes, len, tag & TAG_TRUNCATED != 0)
    }
}

/// One slab. Created once, published in the registry, never freed.
pub(crate) struct Slab {
    /// One owner record per slot, at the start of the mapping.
    owners: &'static [SlotOwner],
    /// Address of slot 0 (its guard page).
    slots_start: usize,
    /// Guard page plus usable size.
    stride: usize,
    /// Usable bytes of every stack in this slab (the class size).
    usable: usize,
    /// Size class index.
    class: usize,
}

impl Slab {
    fn slots(&self) -> usize {
        self.owners.len()
    }

    /// Usable size of this slab's stacks.
    pub(crate) fn usable(&self) -> usize {
        self.usable
    }

    /// Lowest address of slot `index` (the start of its guard page).
    pub(crate) fn slot_limit(&self, index: usize) -> usize {
        self.slots_start + index * self.stride
    }

    /// One past the highest address of slot `index`: where its stack starts growing down.
    pub(crate) fn slot_base(&self, index: usize) -> usize {
        self.slot_limit(index) + self.stride
    }

    /// The owner record of slot `index`.
    pub(crate) fn owner(&self, index: usize) -> &'static SlotOwner {
        &self.owners[index]
    }

    /// The size class of this slab.
    pub(crate) fn class(&self) -> usize {
        self.class
    }
}

/// A carved, guarded slot. `Copy` on purpose: ownership is tracked by `GreenStack` and the
/// free lists, which never hold the same slot twice.
#[derive(Clone, Copy)]
pub(crate) struct RawSlot {
    pub(crate) slab: &'static Slab,
    pub(crate) index: u32,
}

impl RawSlot {
    pub(crate) fn base(self) -> usize {
        self.slab.slot_base(self.index as usize)
    }
    pub(crate) fn limit(self) -> usize {
        self.slab.slot_limit(self.index as usize)
    }
    pub(crate) fn owner(self) -> &'static SlotOwner {
        self.slab.owner(self.index as usize)
    }

    /// Gives the stack's memory back to the kernel (`MADV_DONTNEED`); the next touch reads
    /// zero pages. The guard page is left alone.
    pub(crate) fn trim(self) {
        let page = page_size();
        let start = self.limit() + page;
        let Some(ptr) = NonNull::new(start as *mut libc::c_void) else {
            return;
        };
        // SAFETY: [start, start + usable) is the usable part of a slot that nobody uses (the
        // caller holds it in a free list), inside a private anonymous mapping this module
        // created and never unmaps. Dropping its pages only discards dead stack contents.
        let r = unsafe { mman::madvise(ptr, self.slab.usable, MmapAdvise::MADV_DONTNEED) };
        debug_assert!(r.is_ok(), "MADV_DONTNEED on a stack slot failed: {r:?}");
    }
}

// -------------------------------------------------------------------------------------------
// Registry: an append-only array of published slabs, readable from a signal handler.

static SLABS: [AtomicPtr<Slab>; MAX_SLABS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_SLABS];
static SLAB_COUNT: AtomicUsize = AtomicUsize::new(0);
static REGISTRY_LOCK: Mutex<()> = Mutex::new(());
static CARVED: AtomicUsize = AtomicUsize::new(0);

fn publish(slab: &'static Slab) -> io::Result<()> {
    let _guard = REGISTRY_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let n = SLAB_COUNT.load(Ordering::Relaxed);
    if n == MAX_SLABS {
        return Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            "greenlet stack slab registry is full",
        ));
    }
    SLABS[n].store(slab as *const Slab as *mut Slab, Ordering::Release);
    SLAB_COUNT.store(n + 1, Ordering::Release);
    Ok(())
}

/// Number of slabs mapped so far.
pub(crate) fn slab_count() -> usize {
    SLAB_COUNT.load(Ordering::Acquire)
}

/// Number of slots carved (guarded and handed out at least once) so far.
pub(crate) fn carved_count() -> usize {
    CARVED.load(Ordering::Relaxed)
}

/// If `addr` lies in the guard page of a carved-or-not slot, returns that slab and slot.
/// Async-signal-safe: atomic loads and arithmetic only.
pub(crate) fn find_guard(addr: usize) -> Option<(&'static Slab, usize)> {
    let page = page_size();
    let n = SLAB_COUNT.load(Ordering::Acquire);
    for entry in &SLABS[..n] {
        let p = entry.load(Ordering::Acquire);
        // SAFETY: entries below SLAB_COUNT were stored (Release) before the count was raised,
        // point to leaked `Slab`s that are never freed or mutated, and are never null.
        let slab: &'static Slab = unsafe { &*p };
        let end = slab.slots_start + slab.slots() * slab.stride;
        if addr >= slab.slots_start && addr < end {
            let off = addr - slab.slots_start;
            return (off % slab.stride < page).then_some((slab, off / slab.stride));
        }
    }
    None
}

// -------------------------------------------------------------------------------------------
// Carving.

/// Per-class carving state: the slab slots are being carved from, and the next slot index.
pub(crate) struct Carver {
    slab: Option<&'static Slab>,
    next: usize,
}

impl Carver {
    pub(crate) const fn new() -> Self {
        Carver {
            slab: None,
            next: 0,
        }
    }

    /// Carves a new slot of class `class`, mapping a new slab if needed.
    pub(crate) fn carve(&mut self, class: usize) -> io::Result<RawSlot> {
        let slab = match self.slab {
            Some(s) if self.next < s.slots() => s,
            _ => {
                let s = map_slab(class)?;
                self.slab = Some(s);
                self.next = 0;
                s
            }
        };
        let index = self.next;
        install_guard(slab, index)?;
        self.next += 1;
        CARVED.fetch_add(1, Ordering::Relaxed);
        let slot = RawSlot {
            slab,
            index: index as u32,
        };
        // Tell Valgrind this range is a stack, once for the slot's life (which is the
        // process's), so it recognises switches between neighbouring stacks.
        std::mem::forget(ValgrindStackRegistration::new(
            slot.limit() as *mut u8,
            slot.base() - slot.limit(),
        ));
        Ok(slot)
    }
}

/// Usable size of class `class`.
pub(crate) fn class_size(class: usize) -> usize {
    1usize << (MIN_CLASS_SHIFT as usize + class)
}

fn map_slab(class: usize) -> io::Result<&'static Slab> {
    let page = page_size();
    let usable = class_size(class);
    let stride = usable + page;
    let slots = (SLAB_TARGET_BYTES / stride).max(1);
    let owners_len = (slots * OWNER_BYTES).next_multiple_of(page);
    let len = owners_len + slots * stride;
    let nonzero_len = NonZeroUsize::new(len).expect("slab length is never zero");
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing; it aliases
    // nothing. MAP_NORESERVE: the address space is not charged against overcommit; pages are
    // allocated when a stack first touches them.
    let start = unsafe {
        mman::mmap_anonymous(
            None,
            nonzero_len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
        )
    }
    .map_err(io::Error::from)?;
    // Stacks touch one page at the top of a large range: never back them with huge pages
    // (with THP "always", a 2 MiB page per stack would defeat the whole design).
    // SAFETY: advice on the mapping just created; it does not change its contents.
    let _ = unsafe { mman::madvise(start, len, MmapAdvise::MADV_NOHUGEPAGE) };
    let owners_ptr = start.as_ptr().cast::<SlotOwner>();
    // SAFETY: the mapping is page-aligned (so 64-byte aligned), readable and writable, zero
    // filled (an all-zero `SlotOwner` is valid: it is only atomics), at least
    // `slots * OWNER_BYTES` long, never unmapped and never accessed except through this
    // slice, so handing out a `'static` shared slice is sound.
    let owners: &'static [SlotOwner] = unsafe { std::slice::from_raw_parts(owners_ptr, slots) };
    let slab: &'static Slab = Box::leak(Box::new(Slab {
        owners,
        slots_start: start.as_ptr() as usize + owners_len,
        stride,
        usable,
        class,
    }));
    publish(slab)?;
    Ok(slab)
}

fn install_guard(slab: &Slab, index: usize) -> io::Result<()> {
    let page = page_size();
    let addr = slab.slot_limit(index);
    let ptr = NonNull::new(addr as *mut libc::c_void).expect("slot address is never null");
    let mut mode = MODE.load(Ordering::Acquire);
    if mode == MODE_UNDECIDED || mode == MODE_GUARD_INSTALL {
        // SAFETY: the page is the unused guard page of a slot nobody has been given yet,
        // inside a private anonymous mapping this module owns; turning it into a guard region
        // only makes later accesses to it fault.
        let r = unsafe { libc::madvise(ptr.as_ptr(), page, MADV_GUARD_INSTALL) };
        if r == 0 {
            let _ = MODE.compare_exchange(
                MODE_UNDECIDED,
                MODE_GUARD_INSTALL,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) || mode == MODE_GUARD_INSTALL {
            return Err(err);
        }
        // EINVAL on the first try: the kernel does not know MADV_GUARD_INSTALL.
        let _ = MODE.compare_exchange(
            MODE_UNDECIDED,
            MODE_MPROTECT,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        mode = MODE.load(Ordering::Acquire);
        if mode == MODE_GUARD_INSTALL {
            return install_guard(slab, index);
        }
    }
    if mode == MODE_FORCE_MPROTECT {
        let _ = MODE.compare_exchange(
            MODE_FORCE_MPROTECT,
            MODE_MPROTECT,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
    // SAFETY: as above: the guard page of a slot nobody has been given yet, in our own
    // mapping; PROT_NONE only makes accesses to it fault. This splits the mapping.
    unsafe { mman::mprotect(ptr, page, ProtFlags::PROT_NONE) }.map_err(io::Error::from)
}
