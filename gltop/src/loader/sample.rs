//! The sampled mode and the blocking detector (`bpf/sample.bpf.c`): a cpu-clock perf event
//! per CPU, a `sched_switch` program and (in sampled mode) the `new` probe, reading the
//! runtime's per-thread state through the layout it publishes ([`super::layout`]).
//!
//! [`Sampler::attach`] loads and attaches for one process, [`SharedDetector::attach`] adds a
//! process to the programs a multi-process run shares; [`Sampler::snapshot`] reads what the kernel
//! counted into plain data ([`SampleSnapshot`]): samples and off-CPU time per greenlet,
//! switch counters per thread, and blocking episodes (ended ones from the ring buffer, ongoing
//! ones from the threads' entries).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::mem::MaybeUninit;
use std::rc::Rc;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, RingBuffer, RingBufferBuilder, UprobeOpts};

use super::attach::{delete_all, read_all, u32_key, Pod};
use super::cpuclock::{self, ClockError, Rate};
use super::elf;
use super::layout::{self, LayoutError, SampleLayout};
use super::owned::Owned;
use super::process::{self, Process};
use super::skel::sample::{types, SampleSkel, SampleSkelBuilder};
use super::symbolize::Symbolizer;
use super::{Capacities, Error};

// SAFETY: generated from bpf/sampled.h as #[repr(C)] structs of integers and integer arrays
// (see the generated `types` module); every bit pattern is a valid value.
unsafe impl Pod for types::gs_key {}
// SAFETY: as above: five u64.
unsafe impl Pod for types::gs_stats {}
// SAFETY: as above: u32 and u64.
unsafe impl Pod for types::gs_gkey {}
// SAFETY: as above: u64, u32 and an i8 array.
unsafe impl Pod for types::gs_name {}
// SAFETY: as above: u32, u8, u64 and i64 fields.
unsafe impl Pod for types::gs_thread {}
// SAFETY: as above: u32, u64 and i64.
unsafe impl Pod for types::gs_episode {}
// SAFETY: as above: u64 fields.
unsafe impl Pod for types::gs_totals {}

/// Sampling frequencies accepted, per second.
pub const HZ_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000;
/// Blocking thresholds accepted, milliseconds.
pub const BLOCK_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=3_600_000;

/// What [`Sampler::attach`] may be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleOptions {
    /// cpu-clock samples per second per CPU.
    pub hz: u32,
    /// A thread whose current greenlet has not switched for longer than this is blocked.
    pub block_ms: u64,
    /// Attach the `new` probe to name greenlets (sampled mode; exact mode has its own).
    pub names: bool,
    /// Map capacities (`greenlets` for the per-greenlet maps, `threads` for threads).
    pub capacities: Capacities,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            hz: 99,
            block_ms: 100,
            names: true,
            capacities: Capacities::default(),
        }
    }
}

/// One greenlet (on one thread) as sampled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampledGreenlet {
    /// The process.
    pub pid: i32,
    /// The thread it runs on.
    pub tid: u32,
    /// Its id; 0 stands for "no greenlet runtime state on the thread" (samples taken before
    /// the thread used the runtime).
    pub id: u64,
    /// Name from the `new` probe (`None`: created before the attach, or nameless).
    pub name: Option<String>,
    /// Its `new` probe was seen.
    pub seen_new: bool,
    /// Parent from the `new` probe (`None` for a main greenlet or when not seen).
    pub parent: Option<u64>,
    /// Whether it is its thread's main greenlet (`None`: not known).
    pub main: Option<bool>,
    /// cpu-clock samples that found it running.
    pub samples: u64,
    /// Off-CPU time while it was its thread's current greenlet: blocked, and preempted.
    pub sleep_ns: u64,
    /// See `sleep_ns`.
    pub preempt_ns: u64,
    /// It is its thread's greenlet at the thread's last observation.
    pub current: bool,
}

impl SampledGreenlet {
    /// Off-CPU time, both kinds.
    pub fn offcpu_ns(&self) -> u64 {
        self.sleep_ns + self.preempt_ns
    }

    /// The name to show: its own, `main` for a main greenlet, `?` when unknown.
    pub fn display_name(&self) -> &str {
        match (&self.name, self.seen_new, self.parent) {
            (Some(n), _, _) if !n.is_empty() => n,
            (_, true, None) => "main",
            _ if self.id == 0 => "(no runtime)",
            _ => "?",
        }
    }
}

/// One thread with a runtime state seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampledThread {
    /// Kernel thread id.
    pub tid: u32,
    /// Its greenlet at its last observation (`None`: no runtime state then).
    pub current: Option<u64>,
    /// Its switch counter at the last observation, and transfers since the first one.
    pub counter: u64,
    /// See `counter`.
    pub switches: u64,
    /// cpu-clock samples of the thread.
    pub samples: u64,
    /// Off the CPU at the last event.
    pub off_cpu: bool,
}

/// A blocking episode: one greenlet ran without switching for longer than the threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Episode {
    /// The process and thread.
    pub pid: i32,
    /// See `pid`.
    pub tid: u32,
    /// The greenlet that did not switch.
    pub greenlet: u64,
    /// First moment the thread was seen running it without switching (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// How long (up to the last moment seen; for an ongoing one, up to the snapshot).
    pub duration_ns: u64,
    /// Still going at the snapshot.
    pub ongoing: bool,
    /// Time blocked within it: off the CPU and not runnable (more than half: an off-CPU
    /// episode). Time waiting for a CPU (preempted) counts as on the CPU: the greenlet
    /// wanted to run.
    pub off_cpu_ns: u64,
    /// The system call it blocked in (x86-64 number), if it was in one.
    pub syscall: Option<i64>,
    /// The user stack where it was, innermost first (addresses; empty if not captured).
    pub stack: Vec<u64>,
    /// The same stack, symbolized.
    pub frames: Vec<String>,
}

impl Episode {
    /// Off the CPU for most of it.
    pub fn is_off_cpu(&self) -> bool {
        self.off_cpu_ns * 2 > self.duration_ns
    }

    /// The system call's name.
    pub fn syscall_name(&self) -> Option<String> {
        self.syscall.and_then(super::syscalls::name)
    }

    /// The finding, in the shape the runtime's in-process checker gives
    /// (`greenlet::lint::Blocking`), for the greenlet named `name`. The system call is named
    /// for an off-CPU episode only.
    pub fn finding(&self, name: Option<String>) -> greenlet::lint::Blocking {
        use greenlet::lint::Where;
        let off = self.is_off_cpu();
        greenlet::lint::Blocking {
            greenlet_id: self.greenlet,
            greenlet_name: name,
            thread: u64::from(self.tid),
            duration: std::time::Duration::from_nanos(self.duration_ns),
            ongoing: self.ongoing,
            cpu: if off { Where::OffCpu } else { Where::OnCpu },
            syscall: if off { self.syscall_name() } else { None },
            stack: self.frames.clone(),
        }
    }
}

/// Totals since attach, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleTotals {
    /// Samples of the watched process, and those whose reads faulted.
    pub samples: u64,
    /// See `samples`.
    pub unreadable: u64,
    /// sched_switch events of watched threads.
    pub switch_events: u64,
    /// `new` probe hits.
    pub created: u64,
    /// Episodes that crossed the threshold.
    pub episodes: u64,
    /// Failed inserts into full maps, lost ring-buffer records, stacks not captured.
    pub stats_failures: u64,
    /// See `stats_failures`.
    pub thread_failures: u64,
    /// See `stats_failures`.
    pub name_failures: u64,
    /// See `stats_failures`.
    pub episode_drops: u64,
    /// See `stats_failures`.
    pub stack_failures: u64,
    /// Per-greenlet records (counts or names) the kernel's LRU maps evicted to make room:
    /// more (thread, greenlet) pairs met than `--max-greenlets`. Counted by user space, as
    /// records seen in one snapshot and gone from the next (nothing else removes them).
    pub evicted: u64,
}

impl SampleTotals {
    /// Events and records lost (full maps, full ring buffer, LRU evictions).
    pub fn dropped(&self) -> u64 {
        self.stats_failures
            + self.thread_failures
            + self.name_failures
            + self.episode_drops
            + self.evicted
    }

    fn from_raw(per_cpu: &[types::gs_totals]) -> SampleTotals {
        let mut s = SampleTotals::default();
        for c in per_cpu {
            s.samples += c.samples;
            s.unreadable += c.unreadable;
            s.switch_events += c.switch_events;
            s.created += c.created;
            s.episodes += c.episodes;
            s.stats_failures += c.stats_failures;
            s.thread_failures += c.thread_failures;
            s.name_failures += c.name_failures;
            s.episode_drops += c.episode_drops;
            s.stack_failures += c.stack_failures;
        }
        s
    }
}

/// What the sampler counted, read in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampleSnapshot {
    /// CLOCK_MONOTONIC ns when read.
    pub at_ns: u64,
    /// Totals.
    pub totals: SampleTotals,
    /// Per (thread, greenlet), by (tid, id).
    pub greenlets: Vec<SampledGreenlet>,
    /// Threads seen, by tid.
    pub threads: Vec<SampledThread>,
    /// Episodes that ended since the previous snapshot, then those still going.
    pub episodes: Vec<Episode>,
    /// The runtime's layout is known (a thread state exists): sampling reads greenlets.
    pub layout_known: bool,
}

/// The detector's BPF side: its programs (one `sched_switch`, one cpu-clock event per CPU),
/// maps and ring buffer. One process's own ([`Sampler::attach`]), or shared by every
/// process a [`SharedDetector`] watches: the programs key everything by process, and each
/// process's [`Sampler`] reads its own part.
struct Core {
    // Field order: links and the ring buffer go before the skeleton that owns the programs.
    _links: Vec<Link>,
    ring: RingBuffer<'static>,
    arrived: Rc<RefCell<Vec<types::gs_episode>>>,
    skel: Owned<SampleSkel<'static>>,
    cpus: usize,
    /// Several processes: per-process sample counts, and a process's records go when its
    /// sampler drops.
    shared: bool,
    /// Ended episodes read from the ring buffer, by process, until its sampler takes them.
    ended: HashMap<u32, Vec<types::gs_episode>>,
    /// Stack ids freed since each process's sampler last looked (its cached frames go).
    freed: HashMap<u32, HashSet<u32>>,
    /// Stack ids left unreferenced at the previous collection.
    unreferenced: HashSet<u32>,
}

/// The sampler's view of one process: its own BPF programs, or its part of a shared
/// detector's.
pub struct Sampler {
    // Field order: the `new` probe's links go before the programs they run.
    _links: Vec<Link>,
    core: Rc<RefCell<Core>>,
    process: Process,
    opts: SampleOptions,
    layout: Option<SampleLayout>,
    new_sites: usize,
    frames: Option<Symbolizer>,
    /// Where the published layout is in the target's memory, while it is not known yet.
    layout_at: Option<(std::fs::File, u64)>,
    /// Symbolized stacks by (stack id, word at the stack pointer).
    symbols: HashMap<(i64, u64), (Vec<u64>, Vec<String>)>,
    /// The per-greenlet records of the previous snapshot: (tid, id) of counts, id of names.
    records: (HashSet<(u32, u64)>, HashSet<u64>),
    /// Records evicted since attach (see [`SampleTotals::evicted`]).
    evicted: u64,
    /// On a shared detector: the samples of this process's threads whose entries went.
    gone_samples: u64,
}

/// One blocking detector for every process of a gltop run (several `-p`, `--exe`,
/// `--children`): one `sched_switch` program and one cpu-clock event per CPU whatever the
/// number of processes, each process added to its `watched` map as it is attached and its
/// records removed when its [`Sampler`] drops. The BPF side goes once the last sampler
/// drops (and comes back at the next attach). Not for Python greenlet processes, whose
/// detector reads the switch probes' map of their own session
/// ([`Sampler::attach_python`]).
#[derive(Default)]
pub struct SharedDetector {
    core: std::rc::Weak<RefCell<Core>>,
}

impl std::fmt::Debug for SharedDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDetector")
            .field(
                "processes",
                &self.core.upgrade().map(|c| c.borrow().ended.len()),
            )
            .finish()
    }
}

impl SharedDetector {
    /// No BPF side until the first attach.
    pub fn new() -> SharedDetector {
        SharedDetector::default()
    }

    /// Watches process `pid` too (as [`Sampler::attach`], without the `new` probe: the
    /// exact mode names greenlets). The first attach loads and attaches the programs with
    /// `opts`; later ones only add the process.
    pub fn attach(&mut self, pid: i32, opts: &SampleOptions) -> Result<Sampler, Error> {
        let opts = SampleOptions {
            names: false,
            ..*opts
        };
        Sampler::attach_to(pid, &opts, None, Some(self))
    }
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("process", &self.process)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// A loader error for a clock that could not be started on every CPU.
pub(super) fn clock_error(e: ClockError<libbpf_rs::Error>) -> Error {
    match e {
        ClockError::Open { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Error::NotPermitted {
                action: "open the cpu-clock perf event".into(),
                need: process::BPF_PRIVILEGE.into(),
            }
        }
        ClockError::Open { cpu, source } => Error::Io {
            action: format!("cannot open the cpu-clock perf event on CPU {cpu}"),
            source,
        },
        ClockError::Cpus(why) => Error::Io {
            action: "cannot count the CPUs".into(),
            source: std::io::Error::other(why),
        },
        ClockError::Attach(e) => Error::bpf("cannot attach to the cpu-clock perf event", e),
    }
}

/// The layout as the BPF map's value (`struct gl_layout`: s64, then six u32).
fn layout_bytes(l: &SampleLayout) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&l.tls_offset.to_ne_bytes());
    let fields = [
        l.state_current,
        l.state_switches,
        l.inner_id,
        l.inner_flags,
        l.state_origin,
        l.inner_stack,
    ];
    for (i, v) in fields.iter().enumerate() {
        b[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_ne_bytes());
    }
    b
}

/// The address of the published layout in process `pid`, and its memory opened for reading.
fn layout_address(pid: i32) -> Option<(std::fs::File, u64)> {
    use std::os::unix::fs::MetadataExt;
    let exe = format!("/proc/{pid}/exe");
    let offset = layout::section_offset(&std::fs::read(&exe).ok()?).ok()??;
    let inode = std::fs::metadata(&exe).ok()?.ino();
    let maps: Vec<super::semaphore::Mapping> = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .ok()?
        .lines()
        .filter_map(super::semaphore::parse_maps_line)
        .collect();
    let addr = super::semaphore::address_of(&maps, inode, offset)?;
    Some((std::fs::File::open(format!("/proc/{pid}/mem")).ok()?, addr))
}

/// Turns a failure to read the layout of a process already attached to into the loader's
/// error.
fn layout_error(e: LayoutError, p: &Process) -> Error {
    match e {
        LayoutError::Io { path, source } => Error::from_io(source, &path),
        other => Error::CannotSample {
            pid: p.pid,
            comm: p.comm.clone(),
            reason: other.to_string(),
        },
    }
}

impl Core {
    /// Loads the programs and attaches `sched_switch` and the cpu-clock events; the `new`
    /// probe's programs are loaded for `new_sites` (`registers`: as uprobes, else as USDT).
    fn load(
        opts: &SampleOptions,
        py_cur: Option<std::os::fd::BorrowedFd<'_>>,
        new_sites: bool,
        registers: bool,
        shared: bool,
    ) -> Result<Core, Error> {
        // SAFETY: the skeleton is all that borrows the storage, and it stays in the `Owned`
        // (the `Core`'s `skel`, never moved out) until the `Core` drops.
        let skel = unsafe {
            Owned::new(MaybeUninit::uninit(), |storage| {
                let mut open = SampleSkelBuilder::default()
                    .open(storage)
                    .map_err(|e| Error::bpf("cannot open the sampler's BPF object", e))?;
                let caps = opts.capacities;
                for (map, n) in [
                    (&mut open.maps.stats, caps.greenlets),
                    (&mut open.maps.names, caps.greenlets),
                    (&mut open.maps.threads, caps.threads),
                ] {
                    map.set_max_entries(n)
                        .map_err(|e| Error::bpf("cannot size the sampler's maps", e))?;
                }
                open.maps
                    .rodata_data
                    .as_deref_mut()
                    .expect("the BPF object has .rodata")
                    .block_ns = opts.block_ms * 1_000_000;
                if let Some(fd) = py_cur {
                    open.maps
                        .rodata_data
                        .as_deref_mut()
                        .expect("the BPF object has .rodata")
                        .py_mode = 1;
                    open.maps
                        .py_cur
                        .reuse_fd(fd)
                        .map_err(|e| Error::bpf("cannot share the Python switch probes' map", e))?;
                }
                open.progs.up_new.set_autoload(new_sites && registers);
                open.progs.usdt_new.set_autoload(new_sites && !registers);
                open.load()
                    .map_err(|e| Error::bpf("cannot load the sampler's BPF programs", e))
            })
        }?;

        let arrived = Rc::new(RefCell::new(Vec::new()));
        let sink = arrived.clone();
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&skel.maps.episodes, move |data: &[u8]| {
                if let Some(e) = types::gs_episode::read(data) {
                    sink.borrow_mut().push(e);
                }
                0
            })
            .map_err(|e| Error::bpf("cannot read the episodes ring buffer", e))?;
        let ring = builder
            .build()
            .map_err(|e| Error::bpf("cannot read the episodes ring buffer", e))?;

        let mut links = vec![skel
            .progs
            .on_switch
            .attach()
            .map_err(|e| Error::bpf("cannot attach to the sched_switch tracepoint", e))?];
        let clocks =
            cpuclock::attach_every_cpu(Rate::PeriodNs(1_000_000_000 / u64::from(opts.hz)), |fd| {
                skel.progs.on_sample.attach_perf_event(fd)
            })
            .map_err(clock_error)?;
        let cpus = clocks.len();
        links.extend(clocks);
        Ok(Core {
            _links: links,
            ring,
            arrived,
            skel,
            cpus,
            shared,
            ended: HashMap::new(),
            freed: HashMap::new(),
            unreferenced: HashSet::new(),
        })
    }

    /// Reads the ring buffer (each process's ended episodes wait for its sampler) and the
    /// threads' entries (returned, every process's), and frees the stacks nothing refers to
    /// any more: no thread's entry and no waiting episode, at this read and the previous one
    /// (an episode that ended between the ring buffer's read and the threads' is in the ring
    /// buffer at the next).
    fn refresh(&mut self) -> Result<Vec<(u32, types::gs_thread)>, Error> {
        let _ = self.ring.consume();
        for e in self.arrived.borrow_mut().drain(..) {
            // Those of a process no longer watched are dropped.
            if let Some(q) = self.ended.get_mut(&e.tgid) {
                q.push(e);
            }
        }
        let maps = &self.skel.maps;
        let threads = read_all(&maps.threads, u32_key, types::gs_thread::read)?;
        let mut referenced: HashSet<u32> = HashSet::new();
        let waiting = self.ended.values().flatten().map(|e| e.stack);
        for id in threads
            .iter()
            .flat_map(|(_, t)| [t.out_stack, t.ep_stack])
            .chain(waiting)
        {
            if id >= 0 {
                referenced.insert(id as u32);
            }
        }
        let in_map: HashSet<u32> = maps.stacks.keys().filter_map(|k| u32_key(&k)).collect();
        for id in in_map
            .iter()
            .filter(|id| !referenced.contains(id) && self.unreferenced.contains(id))
        {
            let _ = maps.stacks.delete(&id.to_ne_bytes());
            for f in self.freed.values_mut() {
                f.insert(*id);
            }
        }
        self.unreferenced = in_map.difference(&referenced).copied().collect();
        Ok(threads)
    }

    /// Stops watching process `tgid` and removes its records: its entry in `watched`, its
    /// threads', its per-greenlet counts and names, its waiting episodes.
    fn forget(&mut self, tgid: u32) {
        self.ended.remove(&tgid);
        self.freed.remove(&tgid);
        let maps = &self.skel.maps;
        let _ = maps.watched.delete(&tgid.to_ne_bytes());
        if let Ok(threads) = read_all(&maps.threads, u32_key, types::gs_thread::read) {
            for (tid, _) in threads.iter().filter(|(_, t)| t.tgid == tgid) {
                let _ = maps.threads.delete(&tid.to_ne_bytes());
            }
        }
        let stats: Vec<Vec<u8>> = maps
            .stats
            .keys()
            .filter(|k| types::gs_key::read(k).is_some_and(|k| k.tgid == tgid))
            .collect();
        for k in stats {
            let _ = maps.stats.delete(&k);
        }
        let names: Vec<Vec<u8>> = maps
            .names
            .keys()
            .filter(|k| types::gs_gkey::read(k).is_some_and(|k| k.tgid == tgid))
            .collect();
        for k in names {
            let _ = maps.names.delete(&k);
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        let mut core = self.core.borrow_mut();
        if core.shared {
            core.forget(self.process.pid as u32);
        }
    }
}

impl Sampler {
    /// Loads the sampler and attaches it to process `pid`: the cpu-clock event on every CPU,
    /// `sched_switch`, and (with `opts.names`) the `new` probe. Fails if the executable does
    /// not publish a sample layout.
    pub fn attach(pid: i32, opts: &SampleOptions) -> Result<Sampler, Error> {
        Self::attach_to(pid, opts, None, None)
    }

    /// The blocking detector of exact mode on a Python greenlet process: its threads' running
    /// greenlets come from the map `py_cur` that the exact mode's switch uprobes keep
    /// ([`super::Session::python_current_map`]), not from a published layout. Stacks are the
    /// interpreter's native frames; greenlets are not named by a `new` probe here.
    pub fn attach_python(
        pid: i32,
        opts: &SampleOptions,
        py_cur: std::os::fd::BorrowedFd<'_>,
    ) -> Result<Sampler, Error> {
        let opts = SampleOptions {
            names: false,
            ..*opts
        };
        Self::attach_to(pid, &opts, Some(py_cur), None)
    }

    fn attach_to(
        pid: i32,
        opts: &SampleOptions,
        py_cur: Option<std::os::fd::BorrowedFd<'_>>,
        shared: Option<&mut SharedDetector>,
    ) -> Result<Sampler, Error> {
        if !HZ_RANGE.contains(&opts.hz) {
            return Err(Error::BadCapacity(format!(
                "sampling frequency {} is outside {}..={}",
                opts.hz,
                HZ_RANGE.start(),
                HZ_RANGE.end()
            )));
        }
        let process = Process::find(pid)?;
        process::check_bpf_privilege()?;
        // Published at all? (`None`: published, no thread state yet: read again later.)
        let layout = if py_cur.is_some() {
            // Unused by the programs in Python mode; its presence in `watched` is what counts.
            Ok(Some(SampleLayout::default()))
        } else {
            layout::read(pid)
        }
        .map_err(|e| match e {
            LayoutError::NotPublished { .. }
            | LayoutError::Unsupported { .. }
            | LayoutError::TlsNotStatic { .. } => Error::CannotSample {
                pid,
                comm: process.comm.clone(),
                reason: e.to_string(),
            },
            other => layout_error(other, &process),
        })?;
        let exe = process.exe();
        let new_sites: Vec<elf::ProbeSite> = if opts.names {
            elf::greenlet_sites(&exe)?
                .sites
                .into_iter()
                .filter(|s| s.name == "new")
                .collect()
        } else {
            Vec::new()
        };
        let registers = new_sites.iter().all(|s| s.args_in_abi_registers());
        let core = match shared {
            Some(d) => match d.core.upgrade() {
                Some(core) => core,
                None => {
                    let core = Rc::new(RefCell::new(Core::load(opts, None, false, false, true)?));
                    d.core = Rc::downgrade(&core);
                    core
                }
            },
            None => Rc::new(RefCell::new(Core::load(
                opts,
                py_cur,
                !new_sites.is_empty(),
                registers,
                false,
            )?)),
        };

        let mut links = Vec::new();
        let mut new_count = 0;
        if !new_sites.is_empty() {
            let c = core.borrow();
            let what = || format!("cannot attach to greenlet:new of process {pid}");
            if registers {
                for site in &new_sites {
                    let o = UprobeOpts {
                        ref_ctr_offset: site.semaphore_offset.unwrap_or(0) as usize,
                        ..Default::default()
                    };
                    links.push(
                        c.skel
                            .progs
                            .up_new
                            .attach_uprobe_with_opts(pid, &exe, site.file_offset as usize, o)
                            .map_err(|e| Error::bpf(what(), e))?,
                    );
                    new_count += 1;
                }
            } else {
                links.push(
                    c.skel
                        .progs
                        .usdt_new
                        .attach_usdt(pid, &exe, elf::PROVIDER, "new")
                        .map_err(|e| Error::bpf(what(), e))?,
                );
                new_count = new_sites.len();
            }
        }
        {
            let mut c = core.borrow_mut();
            c.ended.insert(pid as u32, Vec::new());
            c.freed.insert(pid as u32, HashSet::new());
        }
        // From here a failure drops the sampler, which removes the process again.
        let mut sampler = Sampler {
            _links: links,
            core,
            frames: Symbolizer::for_process(pid).ok(),
            process,
            opts: *opts,
            layout: None,
            new_sites: new_count,
            layout_at: None,
            symbols: HashMap::new(),
            records: (HashSet::new(), HashSet::new()),
            evicted: 0,
            gone_samples: 0,
        };
        match layout {
            Some(l) => sampler.watch(l)?,
            None => sampler.layout_at = layout_address(pid),
        }
        Ok(sampler)
    }

    /// Whether the target's layout is known (it has created a runtime thread state), after
    /// looking again if it was not: 48 bytes read from its memory, cheap enough to call every
    /// few milliseconds while it is not known, so that a runtime that starts after the attach
    /// is sampled from its first milliseconds.
    pub fn poll_layout(&mut self) -> Result<bool, Error> {
        if self.layout.is_some() {
            return Ok(true);
        }
        let found = match &self.layout_at {
            Some((mem, addr)) => {
                use std::os::unix::fs::FileExt;
                let mut buf = [0u8; layout::SIZE];
                match mem.read_exact_at(&mut buf, *addr) {
                    Ok(()) => layout::decode(&buf, self.process.pid, &self.process.exe())
                        .map_err(|e| layout_error(e, &self.process))?,
                    Err(_) => None,
                }
            }
            None => layout::read(self.process.pid).map_err(|e| layout_error(e, &self.process))?,
        };
        if let Some(l) = found {
            self.watch(l)?;
            self.layout_at = None;
        }
        Ok(self.layout.is_some())
    }

    fn watch(&mut self, l: SampleLayout) -> Result<(), Error> {
        self.core
            .borrow()
            .skel
            .maps
            .watched
            .update(
                &(self.process.pid as u32).to_ne_bytes(),
                &layout_bytes(&l),
                MapFlags::ANY,
            )
            .map_err(|e| Error::bpf("cannot write map \"watched\"", e))?;
        self.layout = Some(l);
        Ok(())
    }

    /// The traced process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Options in force.
    pub fn options(&self) -> SampleOptions {
        self.opts
    }

    /// `new` probe sites attached.
    pub fn new_sites(&self) -> usize {
        self.new_sites
    }

    /// CPUs with a cpu-clock event.
    pub fn cpus(&self) -> usize {
        self.core.borrow().cpus
    }

    /// The stack `id` of the kernel's stack map, with its symbolized frames (cached), and
    /// `sp_word` (the word at the stack pointer when it was taken) as the second frame when it
    /// is a code address the frame-pointer walk skipped: the caller of a leaf function that
    /// keeps no frame (libc's system call wrappers), where a thread blocks.
    fn stack(&mut self, id: i64, sp_word: u64) -> (Vec<u64>, Vec<String>) {
        if id < 0 {
            return (Vec::new(), Vec::new());
        }
        let key = (id, sp_word);
        if let Some(s) = self.symbols.get(&key) {
            return s.clone();
        }
        let mut addrs: Vec<u64> = self
            .core
            .borrow()
            .skel
            .maps
            .stacks
            .lookup(&(id as u32).to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .map(|b| {
                b.chunks_exact(8)
                    .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
                    .take_while(|&a| a != 0)
                    .collect()
            })
            .unwrap_or_default();
        let Some(symbolizer) = self.frames.as_mut() else {
            let frames = addrs.iter().map(|a| format!("{a:#x}")).collect();
            return (addrs, frames);
        };
        if addrs.len() >= 2 && sp_word != addrs[1] && symbolizer.is_mapped(sp_word) {
            addrs.insert(1, sp_word);
        }
        let frames = symbolizer.frame_names(&addrs);
        self.symbols.insert(key, (addrs.clone(), frames.clone()));
        (addrs, frames)
    }

    fn episode(&mut self, tid: u32, e: EpisodeRaw, ongoing: bool) -> Episode {
        let (stack, frames) = self.stack(e.stack, e.sp_word);
        Episode {
            pid: self.process.pid,
            tid,
            greenlet: e.greenlet,
            start_ns: e.start_ns,
            duration_ns: e.end_ns.saturating_sub(e.start_ns),
            ongoing,
            off_cpu_ns: e.off_ns,
            syscall: (e.syscall >= 0).then_some(e.syscall),
            stack,
            frames,
        }
    }

    /// Reads what was counted since attach, the episodes that ended since the last call, and
    /// those going on now.
    pub fn snapshot(&mut self) -> Result<SampleSnapshot, Error> {
        // A layout that cannot be read yet leaves `layout_known` false in this snapshot; the
        // next one tries again (the process may be between exec and its runtime's start).
        let _ = self.poll_layout();
        if let Some(symbolizer) = self.frames.as_mut() {
            symbolizer.refresh();
        }
        let pid = self.process.pid;
        let core_rc = self.core.clone();
        let mut core = core_rc.borrow_mut();
        let all_threads = core.refresh()?;
        let ended_raw: Vec<types::gs_episode> = core
            .ended
            .get_mut(&(pid as u32))
            .map(std::mem::take)
            .unwrap_or_default();
        if let Some(freed) = core.freed.get_mut(&(pid as u32)) {
            if !freed.is_empty() {
                self.symbols
                    .retain(|k, _| k.0 < 0 || !freed.contains(&(k.0 as u32)));
                freed.clear();
            }
        }
        let shared = core.shared;
        let maps = &core.skel.maps;
        let per_cpu: Vec<types::gs_totals> = maps
            .totals
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf("cannot read the sampler's totals", e))?
            .unwrap_or_default()
            .iter()
            .filter_map(|b| types::gs_totals::read(b))
            .collect();
        let at_ns = super::attach::monotonic_ns();
        let stats: Vec<(types::gs_key, types::gs_stats)> =
            read_all(&maps.stats, types::gs_key::read, types::gs_stats::read)?
                .into_iter()
                .filter(|(k, _)| k.tgid == pid as u32)
                .collect();
        let names: HashMap<u64, types::gs_name> =
            read_all(&maps.names, types::gs_gkey::read, types::gs_name::read)?
                .into_iter()
                .filter(|(k, _)| k.tgid == pid as u32)
                .map(|(k, v)| (k.id, v))
                .collect();
        // This process's threads (a shared detector's map has every watched process's).
        let raw_threads: Vec<(u32, types::gs_thread)> = all_threads
            .into_iter()
            .filter(|(_, t)| t.tgid == pid as u32)
            .collect();

        let records = (
            stats.iter().map(|(k, _)| (k.tid, k.id)).collect(),
            names.keys().copied().collect(),
        );
        self.evicted +=
            vanished(&self.records.0, &records.0) + vanished(&self.records.1, &records.1);
        self.records = records;
        let live: BTreeSet<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let mut gone = Vec::new();
        let mut samples = self.gone_samples;
        for (tid, t) in &raw_threads {
            samples += t.samples;
            if !live.contains(tid) {
                gone.extend_from_slice(&tid.to_ne_bytes());
                self.gone_samples += t.samples;
            }
        }
        delete_all(&maps.threads, &gone, 4)?;
        drop(core);
        let block_ns = self.opts.block_ms * 1_000_000;

        let mut episodes = Vec::new();
        for e in ended_raw {
            let raw = EpisodeRaw::from(&e);
            episodes.push(self.episode(e.tid, raw, false));
        }
        let mut threads = Vec::new();
        let mut current: HashMap<u32, u64> = HashMap::new();
        for (tid, t) in &raw_threads {
            let alive = live.contains(tid);
            if let Some((raw, ongoing)) = thread_episode(t, at_ns, block_ns, alive) {
                episodes.push(self.episode(*tid, raw, ongoing));
            }
            if t.has_runtime != 0 {
                current.insert(*tid, t.greenlet);
            }
            threads.push(SampledThread {
                tid: *tid,
                current: (t.has_runtime != 0).then_some(t.greenlet),
                counter: t.switches,
                switches: t.switches.wrapping_sub(t.first_switches),
                samples: t.samples,
                off_cpu: t.off_cpu != 0,
            });
        }
        threads.sort_by_key(|t| t.tid);

        let mut greenlets: Vec<SampledGreenlet> = stats
            .iter()
            .map(|(k, s)| {
                let n = names.get(&k.id).filter(|_| k.id != 0);
                let name = n.map(|n| {
                    let bytes: Vec<u8> = n
                        .name
                        .iter()
                        .map(|&c| c as u8)
                        .take_while(|&c| c != 0)
                        .collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                });
                SampledGreenlet {
                    pid,
                    tid: k.tid,
                    id: k.id,
                    name,
                    seen_new: n.is_some(),
                    parent: n.and_then(|n| (n.parent != 0).then_some(n.parent)),
                    main: n.map(|n| n.parent == 0),
                    samples: s.samples,
                    sleep_ns: s.sleep_ns,
                    preempt_ns: s.preempt_ns,
                    current: current.get(&k.tid) == Some(&k.id),
                }
            })
            .collect();
        // Named greenlets no sample or switch has met yet are shown too.
        let known: HashSet<u64> = greenlets.iter().map(|g| g.id).collect();
        for (id, n) in &names {
            if known.contains(id) {
                continue;
            }
            let bytes: Vec<u8> = n
                .name
                .iter()
                .map(|&c| c as u8)
                .take_while(|&c| c != 0)
                .collect();
            greenlets.push(SampledGreenlet {
                pid,
                tid: n.tid,
                id: *id,
                name: Some(String::from_utf8_lossy(&bytes).into_owned()),
                seen_new: true,
                parent: (n.parent != 0).then_some(n.parent),
                main: Some(n.parent == 0),
                samples: 0,
                sleep_ns: 0,
                preempt_ns: 0,
                current: current.get(&n.tid) == Some(id),
            });
        }
        greenlets.sort_by_key(|g| (g.tid, g.id));
        Ok(SampleSnapshot {
            at_ns,
            totals: {
                let all = SampleTotals::from_raw(&per_cpu);
                SampleTotals {
                    evicted: self.evicted,
                    // A shared detector's totals are every process's; its samples are
                    // counted per thread (those that found a thread's entry).
                    samples: if shared { samples } else { all.samples },
                    ..all
                }
            },
            greenlets,
            threads,
            episodes,
            layout_known: self.layout.is_some(),
        })
    }
}

/// How many of the records `before` are not in `now`: in an LRU map nobody deletes from,
/// those the kernel evicted in between.
fn vanished<K: std::hash::Hash + Eq>(before: &HashSet<K>, now: &HashSet<K>) -> u64 {
    before.iter().filter(|k| !now.contains(k)).count() as u64
}

/// An episode as the kernel left it (from the ring buffer, or built from a thread's entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EpisodeRaw {
    greenlet: u64,
    start_ns: u64,
    end_ns: u64,
    off_ns: u64,
    syscall: i64,
    stack: i64,
    sp_word: u64,
}

impl From<&types::gs_episode> for EpisodeRaw {
    fn from(e: &types::gs_episode) -> Self {
        EpisodeRaw {
            greenlet: e.greenlet,
            start_ns: e.start_ns,
            end_ns: e.end_ns,
            off_ns: e.off_ns,
            syscall: e.syscall,
            stack: e.stack,
            sp_word: e.sp_word,
        }
    }
}

/// The episode a thread's entry shows at `now` (`(episode, ongoing)`), if any: one the
/// kernel opened (the value outlived the threshold at an observation), or a wait that has
/// outlived it since the thread went off the CPU (nothing in the kernel observes a sleeping
/// thread). A thread that is gone (`alive` false) ends its episode at its last observation.
fn thread_episode(
    t: &types::gs_thread,
    now: u64,
    block_ns: u64,
    alive: bool,
) -> Option<(EpisodeRaw, bool)> {
    if t.has_runtime == 0 || t.idle != 0 {
        return None;
    }
    let off = t.off_cpu != 0 && alive;
    let end = if alive { now.max(t.last_ns) } else { t.last_ns };
    let asleep_past = off && end.saturating_sub(t.since_ns) > block_ns;
    if t.ep_open == 0 && !asleep_past {
        return None;
    }
    let (stack, syscall, sp_word) = if t.ep_open != 0 {
        (t.ep_stack, t.ep_syscall, t.ep_sp_word)
    } else {
        (t.out_stack, t.out_syscall, t.out_sp_word)
    };
    let off_now = if off && t.out_sleeping != 0 {
        end.saturating_sub(t.out_ns)
    } else {
        0
    };
    Some((
        EpisodeRaw {
            greenlet: t.greenlet,
            start_ns: t.since_ns,
            end_ns: end,
            off_ns: t.ep_off_ns + off_now,
            syscall,
            stack,
            sp_word,
        },
        alive,
    ))
}

/// Episodes kept for display: ended ones newest first, bounded, and the ongoing ones of the
/// last snapshot. An ongoing episode is replaced by its ended record when that arrives.
#[derive(Clone, Debug, Default)]
pub struct EpisodeLog {
    /// Most ended episodes kept.
    pub max: usize,
    ended: std::collections::VecDeque<Episode>,
    ongoing: Vec<Episode>,
    /// Ended episodes forgotten past `max`.
    pub forgotten: u64,
}

impl EpisodeLog {
    /// A log keeping `max` ended episodes.
    pub fn new(max: usize) -> EpisodeLog {
        EpisodeLog {
            max,
            ..Default::default()
        }
    }

    /// Takes the episodes of a snapshot.
    pub fn absorb(&mut self, episodes: &[Episode]) {
        self.ongoing.clear();
        for e in episodes {
            if e.ongoing {
                self.ongoing.push(e.clone());
            } else {
                self.ended.push_front(e.clone());
            }
        }
        let mut ended: Vec<Episode> = self.ended.drain(..).collect();
        ended.sort_by_key(|e| std::cmp::Reverse(e.start_ns));
        self.ended = ended.into();
        while self.ended.len() > self.max {
            self.ended.pop_back();
            self.forgotten += 1;
        }
    }

    /// Every episode kept, newest first (by start).
    pub fn newest_first(&self) -> Vec<&Episode> {
        let mut all: Vec<&Episode> = self.ongoing.iter().chain(self.ended.iter()).collect();
        all.sort_by_key(|e| std::cmp::Reverse(e.start_ns));
        all
    }
}

/// Threads' switch counts per (tid) between two snapshots, per second.
pub fn thread_switch_rates(prev: &SampleSnapshot, cur: &SampleSnapshot) -> BTreeMap<u32, f64> {
    let dt = cur.at_ns.saturating_sub(prev.at_ns);
    cur.threads
        .iter()
        .filter_map(|t| {
            let before = prev.threads.iter().find(|p| p.tid == t.tid)?;
            Some((
                t.tid,
                super::rates::per_second(before.counter, t.counter, dt),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_gone_from_one_snapshot_to_the_next_count_as_evicted() {
        let before: HashSet<(u32, u64)> = [(1, 1), (1, 2), (2, 7)].into();
        let now: HashSet<(u32, u64)> = [(1, 2), (2, 7), (2, 9)].into();
        assert_eq!(vanished(&before, &now), 1);
        assert_eq!(vanished(&now, &now), 0);
        assert_eq!(vanished(&HashSet::<u64>::new(), &[3].into()), 0);
        let t = SampleTotals {
            evicted: 4,
            episode_drops: 1,
            ..SampleTotals::default()
        };
        assert_eq!(t.dropped(), 5);
    }

    fn thread() -> types::gs_thread {
        types::gs_thread {
            has_runtime: 1,
            greenlet: 5,
            since_ns: 1_000,
            last_ns: 1_000,
            out_stack: 3,
            out_syscall: 0,
            ep_stack: -1,
            ep_syscall: -1,
            ..Default::default()
        }
    }

    #[test]
    fn a_sleeping_thread_is_blocked_once_its_wait_outlives_the_threshold() {
        let mut t = thread();
        t.off_cpu = 1;
        t.out_sleeping = 1;
        t.out_ns = 1_050;
        assert_eq!(thread_episode(&t, 1_000 + 100, 100, true), None);
        let (e, ongoing) = thread_episode(&t, 1_000 + 101, 100, true).unwrap();
        assert!(ongoing);
        assert_eq!(
            (e.start_ns, e.end_ns, e.stack, e.syscall),
            (1_000, 1_101, 3, 0)
        );
        assert_eq!(e.off_ns, 51, "blocked since the switch-out");
        t.idle = 1;
        assert_eq!(
            thread_episode(&t, 10_000, 100, true),
            None,
            "idle by design"
        );
    }

    #[test]
    fn an_open_episode_on_cpu_and_a_gone_thread() {
        let mut t = thread();
        t.ep_open = 1;
        t.ep_stack = 9;
        t.last_ns = 1_300;
        let (e, ongoing) = thread_episode(&t, 1_400, 100, true).unwrap();
        assert!(ongoing);
        assert_eq!((e.end_ns, e.off_ns, e.stack, e.syscall), (1_400, 0, 9, -1));
        let (e, ongoing) = thread_episode(&t, 1_400, 100, false).unwrap();
        assert!(
            !ongoing,
            "a gone thread's episode ends at its last observation"
        );
        assert_eq!(e.end_ns, 1_300);
        t.has_runtime = 0;
        assert_eq!(thread_episode(&t, 1_400, 100, true), None);
    }

    fn ep(start_ns: u64, ongoing: bool) -> Episode {
        Episode {
            pid: 1,
            tid: 1,
            greenlet: 1,
            start_ns,
            duration_ns: 1,
            ongoing,
            off_cpu_ns: 0,
            syscall: None,
            stack: vec![],
            frames: vec![],
        }
    }

    #[test]
    fn the_log_keeps_newest_first_and_bounds_ended_ones() {
        let mut log = EpisodeLog::new(2);
        log.absorb(&[ep(1, false), ep(3, true)]);
        let starts = |l: &EpisodeLog| {
            l.newest_first()
                .iter()
                .map(|e| e.start_ns)
                .collect::<Vec<_>>()
        };
        assert_eq!(starts(&log), [3, 1]);
        log.absorb(&[ep(3, false), ep(2, false)]);
        assert_eq!(starts(&log), [3, 2]);
        assert_eq!(log.forgotten, 1);
        assert!(log.newest_first().iter().all(|e| !e.ongoing));
    }

    #[test]
    fn the_layout_goes_to_bpf_as_struct_gl_layout() {
        let l = SampleLayout {
            tls_offset: -0x48,
            state_current: 8,
            state_switches: 16,
            inner_id: 24,
            inner_flags: 32,
            state_origin: 40,
            inner_stack: 48,
        };
        let b = layout_bytes(&l);
        assert_eq!(i64::from_ne_bytes(b[..8].try_into().unwrap()), -0x48);
        let words: Vec<u32> = b[8..]
            .chunks(4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(words, [8, 16, 24, 32, 40, 48]);
        assert_eq!(b.len(), std::mem::size_of::<types::gl_layout>());
    }
}
