//! Loading the BPF object, attaching it to one process, and reading its maps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::mem::MaybeUninit;
use std::path::Path;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, ProgramMut, UprobeMultiOpts, UprobeOpts};
use std::os::fd::AsFd;

use super::elf::{self, ProbeSite};
use super::model::{
    threads_of, Aggregate, EdgeStats, GreenletStats, MapUse, ProcessStats, Snapshot, Totals,
    HIST_BUCKETS,
};
use super::owned::Owned;
use super::process::{self, Process};
use super::python;
use super::skel::{types, GreenletSkel, GreenletSkelBuilder};
use super::Error;

/// The probes of the provider (`greenlet::probes::PROBE_NAMES`), in the order they are
/// attached: `new` and `dead` first, so that a greenlet created during the attach is more
/// likely seen from its birth.
fn attach_order() -> [&'static str; 4] {
    let mut probes = greenlet::probes::PROBE_NAMES;
    probes.sort_by_key(|name| !matches!(*name, "new" | "dead"));
    probes
}

/// Map capacities (entries), fixed when the maps are created. The maps never evict: each
/// must hold what is alive plus what ended since the last snapshot (which moves ended
/// records out); an insert into a full map fails, and the event it would have recorded is
/// counted in [`Totals::dropped`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    /// Greenlet records (about 480 bytes each).
    pub greenlets: u32,
    /// Origin -> target edges (48 bytes each).
    pub edges: u32,
    /// Threads with greenlets (40 bytes each).
    pub threads: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            greenlets: 16384,
            edges: 16384,
            threads: 4096,
        }
    }
}

impl Capacities {
    /// Largest capacity accepted for any map.
    pub const MAX: u32 = 1 << 22;

    fn check(&self) -> Result<(), Error> {
        for (what, n) in [
            ("greenlets", self.greenlets),
            ("edges", self.edges),
            ("threads", self.threads),
        ] {
            if n == 0 || n > Self::MAX {
                return Err(Error::BadCapacity(format!(
                    "{what} capacity {n} is outside 1..={}",
                    Self::MAX
                )));
            }
        }
        Ok(())
    }
}

/// How the probes are attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// `Uprobe` when every probe site passes its arguments in the ABI argument registers
    /// (as the `usdt` crate does), else `Usdt`.
    #[default]
    Auto,
    /// A plain uprobe at each site that reads the argument registers: the cheapest.
    Uprobe,
    /// libbpf's USDT support, which decodes any argument location (about 70 ns more per hit).
    Usdt,
}

impl AttachMode {
    /// A short lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Uprobe => "uprobe",
            AttachMode::Usdt => "usdt",
        }
    }
}

/// The kind of kernel link that carries the register-reading uprobes (`AttachMode::Uprobe`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Links {
    /// A perf-event uprobe per call site, opened for the traced PID: the kernel runs it in
    /// that process only, and takes its breakpoint out of a forked child at the child's
    /// first hit of the site (see `bpf/greenlet.bpf.c`), so a child pays nothing after that.
    #[default]
    PerProcess,
    /// One uprobe-multi link per probe with a PID filter: the filter skips a forked child's
    /// hits but leaves the breakpoints in it, so the child pays the trap (about 0.8 us per
    /// hit) for as long as the link lives. For comparisons only.
    MultiPid,
}

/// The greenlet runtime of the traced process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// This project's Rust runtime, through its USDT probes.
    Rust,
    /// Python's `greenlet` package, through uprobes on its `_greenlet*.so`.
    Python(Box<python::PyGreenlet>),
}

impl Runtime {
    /// `rust-greenlet` or `python-greenlet`.
    pub fn name(&self) -> &'static str {
        match self {
            Runtime::Rust => "rust-greenlet",
            Runtime::Python(_) => "python-greenlet",
        }
    }

    /// The version of the runtime in the target, when it says.
    pub fn version(&self) -> Option<&str> {
        match self {
            Runtime::Rust => None,
            Runtime::Python(p) => p.version.as_deref(),
        }
    }
}

/// What [`Session::attach`] may be told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Map capacities.
    pub capacities: Capacities,
    /// How to attach.
    pub mode: AttachMode,
    /// The link kind in uprobe mode (ignored when following).
    pub links: Links,
    /// Also watch every process forked from a watched one after the attach (uprobe mode
    /// only): one uprobe-multi link per probe without a PID filter, and a `sched_process_fork`
    /// program that adds each child to the watched set before it runs.
    pub follow: bool,
    /// Keep the kernel's ended sets (`bpf/greenlet.h`, "Ended sets") for
    /// [`Session::aggregate`], which then reads only the records that ended instead of every
    /// record. For a reader of sums only (the exporter); [`Session::snapshot`] works either way.
    pub track_ended: bool,
}

/// BPF programs attached to one process. Dropping it detaches them (libbpf links are file
/// descriptors, so they also go away if this process dies).
pub struct Session {
    // Field order: links must be dropped before the skeleton that owns their programs.
    links: Vec<Link>,
    skel: Owned<GreenletSkel<'static>>,
    process: Process,
    mode: AttachMode,
    link_kind: Links,
    sites: usize,
    missing: Vec<&'static str>,
    capacities: Capacities,
    /// Edges left in the kernel by the last snapshot.
    live_edges: HashSet<(u64, u64)>,
    /// Greenlet records and edges moved out of the kernel so far.
    ended: [u64; 2],
    follow: bool,
    /// The ended sets are kept (`Options::track_ended`).
    track_ended: bool,
    /// For [`Session::aggregate`]: keys of records seen dead but not yet moved out.
    pending: HashSet<u64>,
    /// For [`Session::aggregate`]: failed pushes into the ended sets and failed record
    /// inserts at the last full read, and refreshes since it.
    trouble: (u64, u64),
    since_full: u32,
    /// The watched processes seen so far (`None`: gone before it was first seen).
    known: BTreeMap<i32, (i32, Option<Process>, bool)>,
    runtime: Runtime,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("process", &self.process)
            .field("mode", &self.mode)
            .field("sites", &self.sites)
            .finish_non_exhaustive()
    }
}

/// Plain-old-data types of the BPF maps, readable from the bytes the kernel copies out.
///
/// # Safety
/// Implementors must be `#[repr(C)]` structs made only of integers and arrays of integers,
/// so that every bit pattern of `size_of::<Self>()` bytes is a valid value.
pub(super) unsafe trait Pod: Copy {
    fn read(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length was checked just above, `read_unaligned` copes with any
        // alignment, and the trait's contract makes every bit pattern a valid `Self`.
        Some(unsafe { bytes.as_ptr().cast::<Self>().read_unaligned() })
    }
}

// SAFETY: generated from bpf/greenlet.h as #[repr(C)] structs of u64, u32, u8 and arrays of
// u64 and i8 (see the generated `types` module); no bools, enums, pointers or references.
unsafe impl Pod for types::gl_stats {}
// SAFETY: as above: two u64.
unsafe impl Pod for types::gl_edge_key {}
// SAFETY: as above: two u64.
unsafe impl Pod for types::gl_edge {}
// SAFETY: as above: three u64.
unsafe impl Pod for types::gl_thread {}
// SAFETY: as above: u64 fields and an array of u64.
unsafe impl Pod for types::gl_totals {}
// SAFETY: as above: two u32 and four u64.
unsafe impl Pod for types::gl_proc {}

/// The parent PID of `pid` (field 4 of `/proc/PID/stat`); 0 if unknown.
fn parent_of(pid: i32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.get(s.rfind(')')? + 1..)?.to_string();
            after.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Bits of a stored greenlet id that hold the id while following (`bpf/greenlet.h`).
const PID_SHIFT: u32 = 42;
const ID_MASK: u64 = (1 << PID_SHIFT) - 1;

fn u64_key(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(..8)?.try_into().ok()?))
}

pub(super) fn u32_key(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// A dead greenlet whose record is not `done` (its last transfer was never seen) this long
/// after its death is moved out of the kernel anyway. Every way the runtime ends a greenlet
/// marks it done; this only bounds the map if a process breaks that (or dies mid-way).
const DEAD_GRACE_NS: u64 = 10_000_000_000;

/// [`Session::aggregate`] reads every record for failed record inserts at most once in this
/// many refreshes.
const LOST_RECORDS_RESYNC: u32 = 30;

/// Deletes `keys` (each `key_size` bytes, concatenated) from a hash map; keys already gone
/// are not an error.
pub(super) fn delete_all(
    map: &libbpf_rs::MapMut<'_>,
    keys: &[u8],
    key_size: usize,
) -> Result<(), Error> {
    let count = keys.len() / key_size;
    if count == 0 {
        return Ok(());
    }
    if map
        .delete_batch(keys, count as u32, MapFlags::ANY, MapFlags::ANY)
        .is_ok()
    {
        return Ok(());
    }
    // The batch stops at the first key it cannot delete: delete one by one.
    for key in keys.chunks_exact(key_size) {
        match map.delete(key) {
            Ok(()) => {}
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::bpf(
                    format!("cannot delete from map {:?}", map.name()),
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// Reads every entry of a hash map; `Err` if the kernel refused.
///
/// In one batch as large as the map: the kernel fills a hash-map batch bucket by bucket and
/// returns it short when the next bucket does not fit, and libbpf-rs's batch iterator takes a
/// short batch for the last one, so smaller batches silently lost whatever came after the
/// first short one (snapshots cut at 1023, 2047, ... entries while the map was busy).
pub(super) fn read_all<K, V>(
    map: &libbpf_rs::MapMut<'_>,
    key: impl Fn(&[u8]) -> Option<K>,
    value: impl Fn(&[u8]) -> Option<V>,
) -> Result<Vec<(K, V)>, Error> {
    let batch = map.max_entries().max(1);
    let iter = map
        .lookup_batch(batch, MapFlags::ANY, MapFlags::ANY)
        .map_err(|e| Error::bpf(format!("cannot read map {:?}", map.name()), e))?;
    Ok(iter
        .filter_map(|(k, v)| Some((key(&k)?, value(&v)?)))
        .collect())
}

/// Empties a hash set the kernel pushes keys into, in batches of lookup-and-delete, and
/// returns its keys: each batch deletes what it returns, so the rounds go on until one finds
/// the set empty (a key pushed meanwhile is in this answer or in the next one, never lost).
fn drain<K>(
    map: &libbpf_rs::MapMut<'_>,
    key: impl Fn(&[u8]) -> Option<K>,
) -> Result<Vec<K>, Error> {
    let mut out = Vec::new();
    loop {
        let iter = map
            .lookup_and_delete_batch(4096, MapFlags::ANY, MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("cannot drain map {:?}", map.name()), e))?;
        let before = out.len();
        out.extend(iter.filter_map(|(k, _)| key(&k)));
        if out.len() == before {
            return Ok(out);
        }
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub(crate) fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

impl Session {
    /// Loads the BPF programs with `opts.capacities` and attaches them to the `greenlet`
    /// probes of process `pid` (all its threads).
    pub fn attach(pid: i32, opts: &Options) -> Result<Session, Error> {
        Session::attach_programs(pid, opts, false)
    }

    /// For benchmarks: attaches, to the `switch` probe only, a program that does nothing but
    /// count hits in `Totals::switches` (the cheapest a handler can be).
    #[doc(hidden)]
    pub fn attach_floor(pid: i32, links: Links) -> Result<Session, Error> {
        let opts = Options {
            mode: AttachMode::Uprobe,
            links,
            ..Options::default()
        };
        Session::attach_programs(pid, &opts, true)
    }

    fn attach_programs(pid: i32, opts: &Options, floor: bool) -> Result<Session, Error> {
        opts.capacities.check()?;
        let process = Process::find(pid)?;
        process::check_bpf_privilege()?;
        let exe = process.exe();
        let elf::ProbeNotes { sites, orphans } = match elf::greenlet_sites(&exe) {
            // A kernel thread has no executable, hence no probes.
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && process.is_alive() =>
            {
                elf::ProbeNotes::default()
            }
            notes => notes?,
        };
        if sites.is_empty() && !floor {
            if let Some(py) = python::find(&process)? {
                return Session::attach_python(process, py, opts);
            }
        }
        if sites.is_empty() {
            return Err(Error::NoProbes {
                pid,
                comm: process.comm.clone(),
                exe: std::fs::read_link(&exe).unwrap_or(exe),
            });
        }
        let mode = resolve_mode(opts.mode, &sites, &orphans, &exe)?;
        if opts.follow && mode != AttachMode::Uprobe {
            return Err(Error::BadExecutable {
                path: exe.clone(),
                reason: "following forks needs the uprobe attach mode".into(),
            });
        }
        // Kernels before 6.6 have no uprobe-multi links and refuse those programs: they are
        // loaded only when a uprobe-multi link is to be made.
        let multi = mode == AttachMode::Uprobe && (opts.links == Links::MultiPid || opts.follow);
        let skel = load(&opts.capacities, multi, opts.follow, opts.track_ended, None)?;
        let mut session = Session {
            links: Vec::new(),
            skel,
            process,
            mode,
            link_kind: opts.links,
            sites: 0,
            missing: Vec::new(),
            capacities: opts.capacities,
            live_edges: HashSet::new(),
            ended: [0; 2],
            track_ended: opts.track_ended,
            pending: HashSet::new(),
            trouble: (0, 0),
            since_full: 0,
            follow: opts.follow,
            known: BTreeMap::new(),
            runtime: Runtime::Rust,
        };
        if opts.follow {
            session.link_kind = Links::MultiPid;
            let root = types::gl_proc {
                ppid: parent_of(pid),
                ..Default::default()
            };
            // SAFETY: `gl_proc` is a #[repr(C)] struct of integers (see `Pod`); viewing it as
            // bytes reads every byte of it, padding included, which `Default` zeroed.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&root as *const types::gl_proc).cast::<u8>(),
                    std::mem::size_of::<types::gl_proc>(),
                )
            };
            session
                .skel
                .maps
                .procs
                .update(&pid.to_ne_bytes(), bytes, MapFlags::ANY)
                .map_err(|e| Error::bpf("cannot write map \"procs\"", e))?;
            let link =
                session.skel.progs.on_fork.attach().map_err(|e| {
                    Error::bpf("cannot attach to the sched_process_fork tracepoint", e)
                })?;
            session.links.push(link);
        }
        let mut all = attach_order();
        // A per-process link is made site by site, and each raises its probe's semaphore:
        // the probe with the fewest sites goes last, so that once every semaphore reads
        // non-zero (what a target waiting for its tracer polls) every other site is armed
        // (the greenlet runtime has one `throw` site).
        let count = |p: &str| sites.iter().filter(|s| s.name == p).count();
        if let Some(i) = (0..all.len()).rev().min_by_key(|&i| count(all[i])) {
            let last = all[i];
            all.copy_within(i + 1.., i);
            all[all.len() - 1] = last;
        }
        let probes: &[&'static str] = if floor { &["switch"] } else { &all };
        for &probe in probes {
            let here: Vec<&ProbeSite> = sites.iter().filter(|s| s.name == probe).collect();
            if here.is_empty() {
                session.missing.push(probe);
                continue;
            }
            session.attach_probe(probe, &here, &exe, floor)?;
        }
        Ok(session)
    }

    fn attach_probe(
        &mut self,
        probe: &str,
        sites: &[&ProbeSite],
        exe: &Path,
        floor: bool,
    ) -> Result<(), Error> {
        let pid = self.process.pid;
        let progs = &self.skel.progs;
        let (up, pp, usdt): (&ProgramMut<'_>, &ProgramMut<'_>, &ProgramMut<'_>) = match probe {
            "new" => (&progs.um_new, &progs.up_new, &progs.usdt_new),
            "dead" => (&progs.um_dead, &progs.up_dead, &progs.usdt_dead),
            "throw" => (&progs.um_throw, &progs.up_throw, &progs.usdt_throw),
            _ if floor => (&progs.um_floor, &progs.up_floor, &progs.usdt_switch),
            _ => (&progs.um_switch, &progs.up_switch, &progs.usdt_switch),
        };
        let what = || format!("cannot attach to greenlet:{probe} of process {pid}");
        match self.mode {
            AttachMode::Usdt => {
                let link = usdt
                    .attach_usdt(pid, exe, elf::PROVIDER, probe)
                    .map_err(|e| Error::bpf(what(), e))?;
                self.links.push(link);
                self.sites += sites.len();
            }
            _ if self.link_kind == Links::PerProcess => {
                for site in sites {
                    let opts = UprobeOpts {
                        ref_ctr_offset: site.semaphore_offset.unwrap_or(0) as usize,
                        ..Default::default()
                    };
                    let link = pp
                        .attach_uprobe_with_opts(pid, exe, site.file_offset as usize, opts)
                        .map_err(|e| Error::bpf(what(), e))?;
                    self.links.push(link);
                    self.sites += 1;
                }
            }
            _ => {
                // One uprobe-multi link for all the sites of the probe: detaching it waits
                // for one RCU grace period, where a link per site waits for one each
                // (about 0.1 s per site on the project's VM).
                let opts = UprobeMultiOpts {
                    offsets: sites.iter().map(|s| s.file_offset as usize).collect(),
                    ref_ctr_offsets: sites
                        .iter()
                        .map(|s| s.semaphore_offset.unwrap_or(0) as usize)
                        .collect(),
                    ..Default::default()
                };
                // Following: no PID filter (-1), the programs look the process up themselves.
                let link = up
                    .attach_uprobe_multi_with_opts(
                        if self.follow { -1 } else { pid },
                        exe,
                        "",
                        opts,
                    )
                    .map_err(|e| Error::bpf(what(), e))?;
                self.links.push(link);
                self.sites += sites.len();
            }
        }
        Ok(())
    }

    /// Attaches to Python greenlet in `process`: a uprobe per function of
    /// [`python::FUNCTIONS`] the `.so` has, in the order that sees a greenlet's birth before
    /// its transfers.
    fn attach_python(
        process: Process,
        py: python::PyGreenlet,
        opts: &Options,
    ) -> Result<Session, Error> {
        let pid = process.pid;
        if opts.follow {
            return Err(Error::Python {
                pid,
                comm: process.comm.clone(),
                reason: "--follow is for the Rust runtime's probes only".into(),
            });
        }
        if opts.mode == AttachMode::Usdt {
            return Err(Error::Python {
                pid,
                comm: process.comm.clone(),
                reason: "Python greenlet has no USDT probes: use --attach auto or uprobe".into(),
            });
        }
        if std::env::var_os("GLTOP_DEBUG").is_some() {
            eprintln!("gltop: {} offsets {:?}", py.so.display(), py.offsets);
            eprintln!(
                "gltop: functions {:x?}, missing {:?}",
                py.functions, py.missing
            );
        }
        let skel = load(
            &opts.capacities,
            false,
            false,
            opts.track_ended,
            Some(&py.offsets),
        )?;
        let mut session = Session {
            links: Vec::new(),
            skel,
            process,
            mode: AttachMode::Uprobe,
            link_kind: Links::PerProcess,
            sites: 0,
            missing: py.missing.clone(),
            capacities: opts.capacities,
            live_edges: HashSet::new(),
            ended: [0; 2],
            track_ended: opts.track_ended,
            pending: HashSet::new(),
            trouble: (0, 0),
            since_full: 0,
            follow: false,
            known: BTreeMap::new(),
            runtime: Runtime::Rust,
        };
        let order = [
            "new_main",
            "new",
            "finish",
            "dealloc",
            "dealloc_main",
            "start",
            "switch",
        ];
        for name in order {
            let Some(&(_, offset)) = py.functions.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            let progs = &session.skel.progs;
            let prog = match name {
                "new_main" => &progs.py_new_main,
                "new" => &progs.py_new_user,
                "finish" => &progs.py_finish,
                "dealloc" => &progs.py_dealloc_user,
                "dealloc_main" => &progs.py_dealloc_main,
                "start" => &progs.py_bootstrap,
                _ => &progs.py_switch_finish,
            };
            let link = prog
                .attach_uprobe_with_opts(pid, &py.path, offset as usize, UprobeOpts::default())
                .map_err(|e| {
                    Error::bpf(
                        format!(
                            "cannot attach to greenlet's {name} function in {} of process {pid}",
                            py.so.display()
                        ),
                        e,
                    )
                })?;
            session.links.push(link);
            session.sites += 1;
        }
        session.runtime = Runtime::Python(Box::new(py));
        Ok(session)
    }

    /// For the blocking detector on a Python greenlet process: the map in which the switch
    /// uprobes keep each thread's running greenlet (bpf/pycur.h), after setting the threshold
    /// of a long slice; `None` for the Rust runtime.
    pub fn python_current_map(&mut self, block_ms: u64) -> Option<std::os::fd::BorrowedFd<'_>> {
        if !matches!(self.runtime, Runtime::Python(_)) {
            return None;
        }
        self.skel
            .maps
            .data_data
            .as_deref_mut()
            .expect("the BPF object has .data")
            .py_block_ns = block_ms.saturating_mul(1_000_000);
        Some(self.skel.maps.py_cur.as_fd())
    }

    /// The greenlet runtime of the traced process.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The traced process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The kind of link in uprobe mode.
    pub fn links(&self) -> Links {
        self.link_kind
    }

    /// The attach mode in use (`Uprobe` or `Usdt`, never `Auto`).
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Number of probe call sites attached.
    pub fn sites(&self) -> usize {
        self.sites
    }

    /// Probes of the provider that the executable lacks (none for the greenlet runtime).
    pub fn missing_probes(&self) -> &[&'static str] {
        &self.missing
    }

    /// The map capacities in force.
    pub fn capacities(&self) -> Capacities {
        self.capacities
    }

    /// Whether processes forked from the target after the attach are watched too.
    pub fn follows(&self) -> bool {
        self.follow
    }

    /// Reads everything aggregated since attach, and moves out of the kernel's maps the
    /// records that are final: greenlets that ended (dead, and no probe will name them again)
    /// and the edges with such a greenlet at one end. Those are in this snapshot with
    /// `ended` set, and in no later one: whoever keeps a history keeps it from these.
    ///
    /// Live greenlets' records are never deleted, and a record is deleted only once nothing
    /// writes it any more (see `bpf/greenlet.h`, "Lifetimes"), so no count is lost.
    pub fn snapshot(&mut self) -> Result<Snapshot, Error> {
        let maps = &self.skel.maps;
        // Totals first: every event they count is then in the maps read below.
        let per_cpu = maps
            .totals
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf("cannot read the totals", e))?
            .unwrap_or_default();
        let per_cpu: Vec<types::gl_totals> = per_cpu
            .iter()
            .filter_map(|b| types::gl_totals::read(b))
            .collect();
        let at_ns = monotonic_ns();
        // Greenlets before threads: a thread's current greenlet has its record before the
        // thread names it, so the current greenlet read below is in `records`, or was
        // created after they were read (looked up on its own then).
        // A hash map: the records are large (about 450 bytes), and ordering them here moved
        // each several times (most of a refresh with 100,000 greenlets); the greenlets are
        // sorted below, once they are small.
        let raw = read_all(&maps.greenlets, u64_key, types::gl_stats::read)?;
        let mut records: HashMap<u64, (types::gl_stats, bool)> =
            HashMap::with_capacity(raw.len() + 16);
        records.extend(raw.into_iter().map(|(id, raw)| (id, (raw, false))));
        let threads = read_all(&maps.threads, u32_key, types::gl_thread::read)?;
        // Edges after greenlets: every write to an edge precedes the `done` of the greenlets
        // at its ends, so an edge of a greenlet seen done here has its final counts below.
        let raw_edges = read_all(&maps.edges, types::gl_edge_key::read, types::gl_edge::read)?;

        let current: HashMap<u64, u64> = threads
            .iter()
            .filter(|(_, t)| t.current != 0)
            .map(|(_, t)| (t.current, t.since_ns))
            .collect();
        for &id in current.keys() {
            if records.contains_key(&id) {
                continue;
            }
            let raw = maps
                .greenlets
                .lookup(&id.to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| Error::bpf("cannot read map \"greenlets\"", e))?;
            if let Some(raw) = raw.as_deref().and_then(types::gl_stats::read) {
                // Read later than the others: kept in the map until the next snapshot.
                records.insert(id, (raw, true));
            }
        }

        let ended: HashSet<u64> = records
            .iter()
            .filter(|(id, (raw, late_read))| {
                let finished = raw.done != 0
                    || (raw.dead != 0 && at_ns.saturating_sub(raw.dead_ns) > DEAD_GRACE_NS);
                finished && !late_read && !current.contains_key(id)
            })
            .map(|(&id, _)| id)
            .collect();
        // An edge ends with either of its greenlets; or, left by a greenlet whose record is
        // gone (its insert failed in a full map), once a snapshot finds it still there.
        let edge_ended = |k: &types::gl_edge_key| {
            ended.contains(&k.origin)
                || ended.contains(&k.target)
                || (self.live_edges.contains(&(k.origin, k.target))
                    && !(records.contains_key(&k.origin) && records.contains_key(&k.target)))
        };

        let mut keys = Vec::with_capacity(ended.len() * 8);
        for id in &ended {
            keys.extend_from_slice(&id.to_ne_bytes());
        }
        delete_all(&maps.greenlets, &keys, 8)?;
        let mut keys = Vec::new();
        let mut live_edges = HashSet::with_capacity(raw_edges.len());
        let mut edges: Vec<EdgeStats> = Vec::with_capacity(raw_edges.len());
        for (k, v) in &raw_edges {
            let gone = edge_ended(k);
            if gone {
                keys.extend_from_slice(&k.origin.to_ne_bytes());
                keys.extend_from_slice(&k.target.to_ne_bytes());
            } else {
                live_edges.insert((k.origin, k.target));
            }
            edges.push(EdgeStats {
                pid: 0,
                origin: k.origin,
                target: k.target,
                switches: v.switches,
                throws: v.throws,
                ended: gone,
            });
        }
        delete_all(&maps.edges, &keys, 16)?;
        edges.sort_by_key(|e| (e.origin, e.target));

        let maps_after = MapUse {
            greenlets: (records.len() - ended.len()) as u64,
            edges: live_edges.len() as u64,
            threads: threads.len() as u64,
        };
        self.live_edges = live_edges;
        self.ended[0] += ended.len() as u64;
        self.ended[1] += (raw_edges.len() as u64) - maps_after.edges;
        let mut greenlets: Vec<GreenletStats> = records
            .iter()
            .map(|(&id, (raw, _))| {
                GreenletStats::from_raw(id, raw, current.get(&id).copied(), ended.contains(&id))
            })
            .collect();
        let mut threads = threads_of(&greenlets, &threads);
        // Stored ids carry their process while following (bpf/greenlet.h): split them.
        let root = self.process.pid;
        let split = |key: u64| -> (i32, u64) {
            match self.follow {
                true => ((key >> PID_SHIFT) as i32, key & ID_MASK),
                false => (root, key),
            }
        };
        for g in &mut greenlets {
            (g.pid, g.id) = split(g.id);
            g.parent = g.parent.map(|p| split(p).1);
        }
        for e in &mut edges {
            (e.pid, e.origin) = split(e.origin);
            e.target = split(e.target).1;
        }
        for t in &mut threads {
            t.current = t.current.map(|c| split(c).1);
        }
        greenlets.sort_unstable_by_key(|g| (g.pid, g.id));
        edges.sort_by_key(|e| (e.pid, e.origin, e.target));
        let totals = Totals::from_raw(&per_cpu, self.ended);
        let processes = self.processes(&totals)?;
        Ok(Snapshot {
            at_ns,
            totals,
            threads,
            greenlets,
            edges,
            processes,
            maps: maps_after,
        })
    }

    /// The sums of [`Aggregate`], and the records that ended moved out of the kernel's maps
    /// (with their edges) as [`Session::snapshot`] moves them, without reading the other
    /// records: with [`Options::track_ended`], the kernel names the greenlets that died and
    /// the edges inserted since the last refresh (`bpf/greenlet.h`, "Ended sets"), and only
    /// those records are looked up. A refresh reads every record instead (one full snapshot)
    /// when a push into those sets or an insert into a map failed since the last one, or
    /// without `track_ended`.
    pub fn aggregate(&mut self) -> Result<Aggregate, Error> {
        let per_cpu = self.read_totals()?;
        let at_ns = monotonic_ns();
        let mut agg = Aggregate {
            at_ns,
            totals: Totals::default(),
            live: 0,
            slices: 0,
            slice_ns: 0,
            hist: [0; HIST_BUCKETS],
            full_read: false,
        };
        let (mut overflows, mut lost_records) = (0u64, 0u64);
        for c in &per_cpu {
            agg.live = agg.live.wrapping_add(c.live);
            agg.slices += c.slices;
            agg.slice_ns += c.slice_ns;
            for (a, b) in agg.hist.iter_mut().zip(c.hist) {
                *a += b;
            }
            overflows += c.set_overflows;
            lost_records += c.greenlet_failures;
        }
        // A failed push lost a key: read everything now. A failed record insert (a full map)
        // can leave edges of a greenlet that has no record, which only a full read finds:
        // read everything for it too, but at most every `LOST_RECORDS_RESYNC` refreshes, so
        // a map that stays full does not make every refresh a full read. A failed edge insert
        // leaves nothing behind.
        let (seen_overflows, seen_lost) = self.trouble;
        self.since_full = self.since_full.saturating_add(1);
        let full = !self.track_ended
            || overflows != seen_overflows
            || (lost_records != seen_lost && self.since_full >= LOST_RECORDS_RESYNC);
        if full {
            self.trouble = (overflows, lost_records);
            self.since_full = 0;
            self.full_refresh()?;
            agg.full_read = true;
        } else {
            self.move_out_ended(at_ns)?;
        }
        agg.totals = Totals::from_raw(&per_cpu, self.ended);
        Ok(agg)
    }

    /// One full snapshot (which moves every ended record out), after emptying the ended
    /// sets: what they held is in the maps the snapshot reads. The records it finds dead
    /// but leaves in the kernel are pending.
    fn full_refresh(&mut self) -> Result<(), Error> {
        if self.track_ended {
            drain(&self.skel.maps.ended_ids, u64_key)?;
            drain(&self.skel.maps.new_edges, types::gl_edge_key::read)?;
        }
        let snap = self.snapshot()?;
        let follow = self.follow;
        self.pending = snap
            .greenlets
            .iter()
            .filter(|g| !g.ended && g.outcome.is_some())
            .map(|g| match follow {
                true => g.id | ((g.pid as u64) << PID_SHIFT),
                false => g.id,
            })
            .collect();
        Ok(())
    }

    /// The incremental part of [`Session::aggregate`]: drains the ended sets, looks up the
    /// records that died (now or before and still there), and moves out those that are final
    /// as [`Session::snapshot`] decides it (`done`, or dead for `DEAD_GRACE_NS`, and not a
    /// thread's current greenlet), with every edge that has one of them at an end.
    fn move_out_ended(&mut self, at_ns: u64) -> Result<(), Error> {
        let maps = &self.skel.maps;
        // Order (bpf/greenlet.h, "Ended sets"): dead keys, then records, then new edges.
        self.pending.extend(drain(&maps.ended_ids, u64_key)?);
        let mut ended = Vec::new();
        let mut keep = HashSet::new();
        for &id in &self.pending {
            let raw = maps
                .greenlets
                .lookup(&id.to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| Error::bpf("cannot read map \"greenlets\"", e))?;
            let Some(raw) = raw.as_deref().and_then(types::gl_stats::read) else {
                continue; // moved out already (by a full snapshot)
            };
            if raw.done != 0 || at_ns.saturating_sub(raw.dead_ns) > DEAD_GRACE_NS {
                ended.push(id);
            } else {
                keep.insert(id);
            }
        }
        if !ended.is_empty() {
            let threads = read_all(&maps.threads, u32_key, types::gl_thread::read)?;
            let current: HashSet<u64> = threads.iter().map(|(_, t)| t.current).collect();
            ended.retain(|id| !current.contains(id) || !keep.insert(*id));
        }
        self.pending = keep;
        self.live_edges.extend(drain(&maps.new_edges, |k| {
            types::gl_edge_key::read(k).map(|k| (k.origin, k.target))
        })?);
        if ended.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::with_capacity(ended.len() * 8);
        for id in &ended {
            keys.extend_from_slice(&id.to_ne_bytes());
        }
        delete_all(&maps.greenlets, &keys, 8)?;
        let gone: HashSet<u64> = ended.iter().copied().collect();
        let mut edge_keys = Vec::new();
        self.live_edges.retain(|&(o, t)| {
            let end = gone.contains(&o) || gone.contains(&t);
            if end {
                edge_keys.extend_from_slice(&o.to_ne_bytes());
                edge_keys.extend_from_slice(&t.to_ne_bytes());
            }
            !end
        });
        delete_all(&maps.edges, &edge_keys, 16)?;
        self.ended[0] += ended.len() as u64;
        self.ended[1] += (edge_keys.len() / 16) as u64;
        Ok(())
    }

    /// The per-CPU copies of the totals.
    fn read_totals(&self) -> Result<Vec<types::gl_totals>, Error> {
        let per_cpu = self
            .skel
            .maps
            .totals
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf("cannot read the totals", e))?
            .unwrap_or_default();
        Ok(per_cpu
            .iter()
            .filter_map(|b| types::gl_totals::read(b))
            .collect())
    }

    /// The watched processes: while following, every entry of the kernel's `procs` map; else
    /// the traced process, with the totals' counts.
    fn processes(&mut self, totals: &Totals) -> Result<Vec<ProcessStats>, Error> {
        let entries: Vec<(u32, types::gl_proc)> = if self.follow {
            read_all(&self.skel.maps.procs, u32_key, types::gl_proc::read)?
        } else {
            let p = types::gl_proc {
                switches: totals.switches,
                throws: totals.throws,
                created: totals.greenlets_created,
                dead: totals.greenlets_dead,
                ..Default::default()
            };
            vec![(self.process.pid as u32, p)]
        };
        let root = self.process.clone();
        let mut out = Vec::with_capacity(entries.len());
        for (pid, e) in entries {
            let pid = pid as i32;
            let (ppid, seen, exited) = self.known.entry(pid).or_insert_with(|| {
                let p = if pid == root.pid {
                    Some(root.clone())
                } else {
                    Process::find(pid).ok()
                };
                let ppid = if pid == root.pid {
                    parent_of(pid)
                } else {
                    e.ppid
                };
                (ppid as i32, p, false)
            });
            // Once gone, always gone (a reused PID is another process).
            *exited = *exited || !seen.as_ref().is_some_and(Process::is_alive);
            out.push(ProcessStats {
                pid,
                ppid: *ppid,
                comm: seen.as_ref().map(|p| p.comm.clone()).unwrap_or_default(),
                exited: *exited,
                switches: e.switches,
                throws: e.throws,
                greenlets_created: e.created,
                greenlets_dead: e.dead,
            });
        }
        out.sort_by_key(|p| p.pid);
        Ok(out)
    }
}

/// The attach mode to use for these probe notes: `Auto` picks `Uprobe` when every site passes
/// its arguments in the argument registers; a mode the notes cannot support is an error.
fn resolve_mode(
    asked: AttachMode,
    sites: &[ProbeSite],
    orphans: &[(String, String)],
    exe: &Path,
) -> Result<AttachMode, Error> {
    let unreadable = sites.iter().find(|s| !s.args_in_abi_registers());
    let mode = match (asked, unreadable) {
        (AttachMode::Auto | AttachMode::Uprobe, None) => AttachMode::Uprobe,
        (AttachMode::Uprobe, Some(bad)) => {
            return Err(Error::BadExecutable {
                path: exe.to_path_buf(),
                reason: format!(
                    "probe greenlet:{} passes its arguments as {:?}, not in the argument \
                     registers; use the usdt attach mode",
                    bad.name, bad.args
                ),
            })
        }
        _ => AttachMode::Usdt,
    };
    if let (AttachMode::Usdt, Some((_, probe))) = (mode, orphans.first()) {
        return Err(Error::BadExecutable {
            path: exe.to_path_buf(),
            reason: format!(
                "libbpf's USDT support refuses it: it keeps {} note(s) of probe call sites the \
                 linker removed (greenlet:{probe} among them); use the uprobe attach mode",
                orphans.len()
            ),
        });
    }
    Ok(mode)
}

/// Opens the skeleton, sizes its maps and loads it into the kernel; without the uprobe-multi
/// programs unless `multi`.
fn load(
    caps: &Capacities,
    multi: bool,
    follow: bool,
    track_ended: bool,
    python: Option<&python::Offsets>,
) -> Result<Owned<GreenletSkel<'static>>, Error> {
    // SAFETY: the skeleton is all that borrows the storage, and it stays in the `Owned`
    // (the `Session`'s `skel`, never moved out) until the `Session` drops.
    unsafe {
        Owned::new(MaybeUninit::uninit(), |storage| {
            load_in(storage, caps, multi, follow, track_ended, python)
        })
    }
}

/// [`load`], in `storage`.
fn load_in<'obj>(
    storage: &'obj mut MaybeUninit<OpenObject>,
    caps: &Capacities,
    multi: bool,
    follow: bool,
    track_ended: bool,
    python: Option<&python::Offsets>,
) -> Result<GreenletSkel<'obj>, Error> {
    let mut open = GreenletSkelBuilder::default()
        .open(storage)
        .map_err(|e| Error::bpf("cannot open the BPF object", e))?;
    let sizes = [
        (&mut open.maps.greenlets, caps.greenlets),
        (&mut open.maps.edges, caps.edges),
        (&mut open.maps.threads, caps.threads),
    ];
    for (map, n) in sizes {
        map.set_max_entries(n)
            .map_err(|e| Error::bpf("cannot size the BPF maps", e))?;
    }
    // The ended sets hold what happens between two refreshes (allocated as used). For
    // tests only, GLTOP_TEST_SET_CAPACITY makes them tiny, to force the full-read path.
    let test_cap = std::env::var("GLTOP_TEST_SET_CAPACITY")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&n| n > 0);
    let sets = [
        (&mut open.maps.ended_ids, caps.greenlets),
        (&mut open.maps.new_edges, caps.edges),
    ];
    for (map, n) in sets {
        map.set_max_entries(test_cap.unwrap_or(n))
            .map_err(|e| Error::bpf("cannot size the BPF maps", e))?;
    }
    if track_ended {
        open.maps
            .rodata_data
            .as_deref_mut()
            .expect("the BPF object has .rodata")
            .track_ended = 1;
    }
    if follow {
        open.maps
            .rodata_data
            .as_deref_mut()
            .expect("the BPF object has .rodata")
            .follow = 1;
    } else {
        open.progs.on_fork.set_autoload(false);
    }
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .expect("the BPF object has .rodata");
    if let Some(o) = python {
        rodata.py_self = o.self_;
        rodata.py_args = o.args;
        rodata.py_kwargs = o.kwargs;
        rodata.py_origin = o.origin;
        rodata.py_python_state = o.python_state;
        rodata.py_ob_type = o.ob_type;
        rodata.py_tp_name = o.tp_name;
        rodata.py_finish_slot = o.finish_slot.into();
        rodata.py_origin_ref = o.origin_ref.into();
        rodata.py_parent_ref = o.parent_ref.into();
    }
    // Each runtime's programs only: the other's are not loaded.
    {
        let p = &mut open.progs;
        let rust = [
            &mut p.up_switch,
            &mut p.up_throw,
            &mut p.up_new,
            &mut p.up_dead,
            &mut p.up_floor,
            &mut p.usdt_switch,
            &mut p.usdt_throw,
            &mut p.usdt_new,
            &mut p.usdt_dead,
        ];
        if python.is_some() {
            for prog in rust {
                prog.set_autoload(false);
            }
        }
        let py = [
            &mut p.py_switch_finish,
            &mut p.py_bootstrap,
            &mut p.py_new_user,
            &mut p.py_new_main,
            &mut p.py_finish,
            &mut p.py_dealloc_user,
            &mut p.py_dealloc_main,
        ];
        if python.is_none() {
            for prog in py {
                prog.set_autoload(false);
            }
        }
    }
    if !multi {
        let p = &mut open.progs;
        for prog in [
            &mut p.um_switch,
            &mut p.um_throw,
            &mut p.um_new,
            &mut p.um_dead,
            &mut p.um_floor,
        ] {
            prog.set_autoload(false);
        }
    }
    open.load()
        .map_err(|e| Error::bpf("cannot load the BPF programs", e))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::loader::elf::ArgSpec;

    fn site(args: &str) -> ProbeSite {
        ProbeSite {
            provider: "greenlet".into(),
            name: "switch".into(),
            file_offset: 0x1000,
            semaphore_offset: Some(0x2000),
            args: args.split_whitespace().filter_map(ArgSpec::parse).collect(),
        }
    }

    #[test]
    fn auto_picks_uprobes_when_every_site_allows_them() {
        let exe = Path::new("/x");
        let abi = [site("8@%rdi 8@%rsi")];
        let odd = [site("8@%rdi 8@%rsi"), site("8@%rax 8@%rsi")];
        let orphan = [("greenlet".to_string(), "dead".to_string())];
        let mode = |asked, sites: &[ProbeSite], orphans: &[(String, String)]| {
            resolve_mode(asked, sites, orphans, exe).map_err(|e| e.to_string())
        };
        assert_eq!(
            mode(AttachMode::Auto, &abi, &orphan),
            Ok(AttachMode::Uprobe)
        );
        assert_eq!(mode(AttachMode::Auto, &odd, &[]), Ok(AttachMode::Usdt));
        assert_eq!(mode(AttachMode::Usdt, &abi, &[]), Ok(AttachMode::Usdt));
        assert_eq!(
            mode(AttachMode::Uprobe, &abi, &orphan),
            Ok(AttachMode::Uprobe)
        );
        let err = mode(AttachMode::Uprobe, &odd, &[]).unwrap_err();
        assert!(err.contains("not in the argument registers"), "{err}");
        let err = mode(AttachMode::Usdt, &abi, &orphan).unwrap_err();
        assert!(
            err.contains("refuses it") && err.contains("greenlet:dead"),
            "{err}"
        );
        let err = mode(AttachMode::Auto, &odd, &orphan).unwrap_err();
        assert!(err.contains("refuses it"), "{err}");
    }
}
