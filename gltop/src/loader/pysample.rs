//! The sampled mode on Python greenlet processes (issue 18, `bpf/pysample.bpf.c`): a
//! cpu-clock perf event per CPU and `sched_switch`, reading each thread's current
//! `PyGreenlet*` through glibc's DTV, with nothing added to greenlet's switch. Where to read is
//! found by [`super::pygreenlet`]; what is read comes out as the Rust sampled mode's
//! [`SampleSnapshot`], so the JSON lines and the live view are the same, with a greenlet's
//! identity its address (`id()` in Python) plus its type's `tp_name`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags};

use super::attach::{delete_all, read_all, u32_key, Pod};
use super::cpuclock::{self, Rate};
use super::owned::Owned;
use super::process::{self, Process};
use super::pyframes::PyFrameOffsets;
use super::pygreenlet::PyGreenletLayout;
use super::sample::{
    clock_error, SampleOptions, SampleSnapshot, SampleTotals, SampledGreenlet, SampledThread,
    HZ_RANGE,
};
use super::skel::pysample::{types, PysampleSkel, PysampleSkelBuilder};
use super::Error;

// SAFETY: generated from bpf/pysample.h as #[repr(C)] structs of integers and integer arrays
// (see the generated `types` module); every bit pattern is a valid value.
unsafe impl Pod for types::pg_key {}
// SAFETY: as above: four u64.
unsafe impl Pod for types::pg_stats {}
// SAFETY: as above: u32 and u64.
unsafe impl Pod for types::pg_tkey {}
// SAFETY: as above: an i8 array.
unsafe impl Pod for types::pg_name {}
// SAFETY: as above: u32, u8 and u64 fields.
unsafe impl Pod for types::pg_thread {}
// SAFETY: as above: u64 fields.
unsafe impl Pod for types::pg_totals {}
// SAFETY: as above: u64 and u32 fields.
unsafe impl Pod for types::pg_layout {}
// SAFETY: as above: u32 and u64 fields and a u64 array.
unsafe impl Pod for types::pg_skey {}

/// One Python stack of one greenlet, as counted by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyStack {
    /// The greenlet (its address) and its type (address and name).
    pub greenlet: u64,
    /// See `greenlet`.
    pub type_addr: u64,
    /// See `greenlet`.
    pub type_name: Option<String>,
    /// Code object addresses, innermost first.
    pub code: Vec<u64>,
    /// Deeper than the kernel keeps: the outermost frames are missing.
    pub truncated: bool,
    /// Samples.
    pub count: u64,
}

/// How the stack recording went, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyStackTotals {
    /// Samples of the target, and those with a greenlet read.
    pub samples: u64,
    /// Samples whose greenlet read faulted, or of threads with no greenlet state.
    pub unreadable: u64,
    /// See `unreadable`.
    pub no_state: u64,
    /// Stacks counted; samples with no PyThreadState found; stacks not counted (a read
    /// faulted or the map was full).
    pub stacks: u64,
    /// See `stacks`.
    pub no_tstate: u64,
    /// See `stacks`.
    pub failures: u64,
}

/// The runtime name of this mode in `--json` (`"runtime"`).
pub const RUNTIME: &str = "python-greenlet";

/// The Python greenlet sampler, attached to one process.
pub struct PySampler {
    // Field order: the links go before the skeleton that owns the programs.
    _links: Vec<Link>,
    skel: Owned<PysampleSkel<'static>>,
    process: Process,
    opts: SampleOptions,
    layout: PyGreenletLayout,
    cpus: usize,
    /// (tid, greenlet, type) of the counts of the previous snapshot.
    records: HashSet<(u32, u64, u64)>,
    evicted: u64,
}

impl std::fmt::Debug for PySampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PySampler")
            .field("process", &self.process)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// The layout as the BPF map's value.
fn layout_value(l: &PyGreenletLayout) -> types::pg_layout {
    types::pg_layout {
        type_addr: l.type_addr,
        tls_offset: l.tls_offset,
        state_main: l.state_main,
        state_current: l.state_current,
        ob_type: l.ob_type,
        tp_name: l.tp_name,
        modid: 0,
        pad: 0,
    }
}

fn value_bytes(v: &types::pg_layout) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    b.extend_from_slice(&v.type_addr.to_ne_bytes());
    b.extend_from_slice(&v.tls_offset.to_ne_bytes());
    for x in [
        v.state_main,
        v.state_current,
        v.ob_type,
        v.tp_name,
        v.modid,
        v.pad,
    ] {
        b.extend_from_slice(&x.to_ne_bytes());
    }
    b
}

/// The frame offsets as `struct pg_pyoffs`: a u64, then ten u32.
fn offsets_bytes(f: &PyFrameOffsets) -> Vec<u8> {
    let mut b = f.runtime.to_ne_bytes().to_vec();
    for x in [
        f.interp_head,
        f.threads_head,
        f.ts_next,
        f.ts_native_tid,
        f.ts_frame,
        f.cframe_current,
        f.fr_code,
        f.fr_previous,
        f.fr_owner,
        f.owner_cstack,
    ] {
        b.extend_from_slice(&x.to_ne_bytes());
    }
    b
}

fn c_string(bytes: &[i8]) -> String {
    let b: Vec<u8> = bytes
        .iter()
        .map(|&c| c as u8)
        .take_while(|&c| c != 0)
        .collect();
    String::from_utf8_lossy(&b).into_owned()
}

impl PySampler {
    /// Loads the programs and attaches them to process `pid`, whose greenlet module is
    /// described by `layout`.
    pub fn attach(
        pid: i32,
        layout: PyGreenletLayout,
        opts: &SampleOptions,
    ) -> Result<PySampler, Error> {
        PySampler::attach_with(pid, layout, opts, None)
    }

    /// [`PySampler::attach`], also counting each greenlet's Python stacks where `frames` says
    /// how to read them (`gltop record`).
    pub fn attach_with(
        pid: i32,
        layout: PyGreenletLayout,
        opts: &SampleOptions,
        frames: Option<&PyFrameOffsets>,
    ) -> Result<PySampler, Error> {
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
        // SAFETY: the skeleton is all that borrows the storage, and it stays in the `Owned`
        // (the `PySampler`'s `skel`, never moved out) until the `PySampler` drops.
        let skel = unsafe {
            Owned::new(MaybeUninit::uninit(), |storage| {
                let mut open = PysampleSkelBuilder::default()
                    .open(storage)
                    .map_err(|e| Error::bpf("cannot open the Python sampler's BPF object", e))?;
                let caps = opts.capacities;
                for (map, n) in [
                    (&mut open.maps.pystats, caps.greenlets),
                    (&mut open.maps.pythreads, caps.threads),
                ] {
                    map.set_max_entries(n)
                        .map_err(|e| Error::bpf("cannot size the Python sampler's maps", e))?;
                }
                open.maps
                    .rodata_data
                    .as_deref_mut()
                    .expect("the BPF object has .rodata")
                    .record_stacks = u8::from(frames.is_some());
                open.load()
                    .map_err(|e| Error::bpf("cannot load the Python sampler's BPF programs", e))
            })
        }?;
        if let Some(f) = frames {
            skel.maps
                .pyoffs
                .update(
                    &(pid as u32).to_ne_bytes(),
                    &offsets_bytes(f),
                    MapFlags::ANY,
                )
                .map_err(|e| Error::bpf("cannot write map \"pyoffs\"", e))?;
        }
        skel.maps
            .pywatched
            .update(
                &(pid as u32).to_ne_bytes(),
                &value_bytes(&layout_value(&layout)),
                MapFlags::ANY,
            )
            .map_err(|e| Error::bpf("cannot write map \"pywatched\"", e))?;
        let mut links = vec![skel
            .progs
            .py_switch
            .attach()
            .map_err(|e| Error::bpf("cannot attach to the sched_switch tracepoint", e))?];
        let clocks =
            cpuclock::attach_every_cpu(Rate::PeriodNs(1_000_000_000 / u64::from(opts.hz)), |fd| {
                skel.progs.py_sample.attach_perf_event(fd)
            })
            .map_err(clock_error)?;
        let cpus = clocks.len();
        links.extend(clocks);
        Ok(PySampler {
            _links: links,
            skel,
            process,
            opts: *opts,
            layout,
            cpus,
            records: HashSet::new(),
            evicted: 0,
        })
    }

    /// The traced process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Options in force.
    pub fn options(&self) -> SampleOptions {
        self.opts
    }

    /// CPUs with a cpu-clock event.
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// Where the greenlet module is and what was read from it.
    pub fn layout(&self) -> &PyGreenletLayout {
        &self.layout
    }

    /// The module id of `_greenlet*.so` in the process's DTV, once a sample found it.
    pub fn module_id(&self) -> Option<u32> {
        let v = self
            .skel
            .maps
            .pywatched
            .lookup(&(self.process.pid as u32).to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()?;
        let l = types::pg_layout::read(&v)?;
        (l.modid != 0).then_some(l.modid)
    }

    fn per_cpu_totals(&self) -> Result<Vec<types::pg_totals>, Error> {
        Ok(self
            .skel
            .maps
            .pytotals
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf("cannot read the Python sampler's totals", e))?
            .unwrap_or_default()
            .iter()
            .filter_map(|b| types::pg_totals::read(b))
            .collect())
    }

    /// The Python stacks counted since attach (with `attach_with` frames), and how it went.
    pub fn python_stacks(&self) -> Result<(Vec<PyStack>, PyStackTotals), Error> {
        let pid = self.process.pid as u32;
        let maps = &self.skel.maps;
        let names: HashMap<u64, String> =
            read_all(&maps.pytypes, types::pg_tkey::read, types::pg_name::read)?
                .into_iter()
                .filter(|(k, _)| k.tgid == pid)
                .map(|(k, v)| (k.tp, c_string(&v.name)))
                .collect();
        let count = |b: &[u8]| Some(u64::from_ne_bytes(b.get(..8)?.try_into().ok()?));
        let stacks = read_all(&maps.pystacks, types::pg_skey::read, count)?
            .into_iter()
            .filter(|(k, _)| k.tgid == pid)
            .map(|(k, n)| PyStack {
                greenlet: k.greenlet,
                type_addr: k.tp,
                type_name: names.get(&k.tp).cloned(),
                code: k.code[..(k.depth as usize).min(k.code.len())].to_vec(),
                truncated: k.truncated != 0,
                count: n,
            })
            .collect();
        let mut t = PyStackTotals::default();
        for c in self.per_cpu_totals()? {
            t.samples += c.samples;
            t.unreadable += c.unreadable;
            t.no_state += c.no_state;
            t.stacks += c.stacks;
            t.no_tstate += c.no_tstate;
            t.failures += c.stack_failures;
        }
        Ok((stacks, t))
    }

    /// Reads what was counted since attach.
    pub fn snapshot(&mut self) -> Result<SampleSnapshot, Error> {
        let per_cpu = self.per_cpu_totals()?;
        let maps = &self.skel.maps;
        let at_ns = super::attach::monotonic_ns();
        let pid = self.process.pid;
        let stats: Vec<(types::pg_key, types::pg_stats)> =
            read_all(&maps.pystats, types::pg_key::read, types::pg_stats::read)?
                .into_iter()
                .filter(|(k, _)| k.tgid == pid as u32)
                .collect();
        let names: HashMap<u64, String> =
            read_all(&maps.pytypes, types::pg_tkey::read, types::pg_name::read)?
                .into_iter()
                .filter(|(k, _)| k.tgid == pid as u32)
                .map(|(k, v)| (k.tp, c_string(&v.name)))
                .collect();
        let raw_threads: Vec<(u32, types::pg_thread)> =
            read_all(&maps.pythreads, u32_key, types::pg_thread::read)?
                .into_iter()
                .filter(|(_, t)| t.tgid == pid as u32)
                .collect();

        let records: HashSet<(u32, u64, u64)> = stats
            .iter()
            .map(|(k, _)| (k.tid, k.greenlet, k.tp))
            .collect();
        self.evicted += self.records.iter().filter(|r| !records.contains(r)).count() as u64;
        self.records = records;

        let live: BTreeSet<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let mut gone = Vec::new();
        let mut current: HashMap<u32, (u64, u64)> = HashMap::new();
        let mut threads: Vec<SampledThread> = Vec::new();
        for (tid, t) in &raw_threads {
            if !live.contains(tid) {
                gone.extend_from_slice(&tid.to_ne_bytes());
            }
            if t.greenlet != 0 {
                current.insert(*tid, (t.greenlet, t.tp));
            }
            threads.push(SampledThread {
                tid: *tid,
                current: (t.greenlet != 0).then_some(t.greenlet),
                counter: 0,
                switches: 0,
                samples: t.samples,
                off_cpu: t.off_cpu != 0,
            });
        }
        threads.sort_by_key(|t| t.tid);
        delete_all(&self.skel.maps.pythreads, &gone, 4)?;

        let mut greenlets: Vec<SampledGreenlet> = stats
            .iter()
            .map(|(k, s)| SampledGreenlet {
                pid,
                tid: k.tid,
                id: k.greenlet,
                name: (k.greenlet != 0).then(|| {
                    names
                        .get(&k.tp)
                        .cloned()
                        .unwrap_or_else(|| format!("type@{:#x}", k.tp))
                }),
                seen_new: false,
                parent: None,
                main: (k.greenlet != 0).then_some(s.main != 0),
                samples: s.samples,
                sleep_ns: s.sleep_ns,
                preempt_ns: s.preempt_ns,
                current: current.get(&k.tid) == Some(&(k.greenlet, k.tp)),
            })
            .collect();
        greenlets.sort_by(|a, b| (a.tid, a.id, &a.name).cmp(&(b.tid, b.id, &b.name)));
        let mut totals = SampleTotals {
            evicted: self.evicted,
            ..SampleTotals::default()
        };
        for c in &per_cpu {
            totals.samples += c.samples;
            totals.unreadable += c.unreadable;
            totals.switch_events += c.switch_events;
            totals.stats_failures += c.stats_failures;
            totals.thread_failures += c.thread_failures;
            totals.name_failures += c.name_failures;
        }
        Ok(SampleSnapshot {
            at_ns,
            totals,
            greenlets,
            threads,
            episodes: Vec::new(),
            layout_known: self.module_id().is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_goes_to_bpf_as_struct_pg_layout() {
        let l = PyGreenletLayout {
            module: "/x/_greenlet.so".into(),
            version: None,
            python: None,
            tls_offset: 8,
            type_addr: 0x7f00_0000_1234,
            state_main: 0,
            state_current: 8,
            ob_type: 8,
            tp_name: 24,
        };
        let b = value_bytes(&layout_value(&l));
        assert_eq!(b.len(), std::mem::size_of::<types::pg_layout>());
        let back = types::pg_layout::read(&b).unwrap();
        assert_eq!(
            (
                back.type_addr,
                back.tls_offset,
                back.state_current,
                back.tp_name,
                back.modid
            ),
            (0x7f00_0000_1234, 8, 8, 24, 0)
        );
    }
}
