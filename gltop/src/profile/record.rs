//! The BPF side of `gltop record`: loads `bpf/profile.bpf.c`, hands it the target's sample
//! layout, samples every CPU with the software `cpu-clock` event, names greenlets from the
//! `greenlet:new` probe, and reads the counts and stacks back as plain data.

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, UprobeOpts};

use super::fold::{is_greenlet_bottom, RawShape, Stack};
use super::skel::{types, ProfileSkel, ProfileSkelBuilder};
use super::Error;
use crate::loader::cpuclock::{self, ClockError, Rate};
use crate::loader::layout::{self, SampleLayout};
use crate::loader::owned::Owned;
use crate::loader::symbolize::Symbolizer;
use crate::loader::{elf, process, Process};

/// What to record.
#[derive(Clone, Debug)]
pub struct Options {
    /// The process.
    pub pid: i32,
    /// How long.
    pub duration: Duration,
    /// Samples per second on each CPU.
    pub hz: u64,
}

/// Samples of the target that are not in the stacks, by reason (summed over the CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    /// Samples of the target's threads in all.
    pub samples: u64,
    /// On a thread with no greenlet runtime state.
    pub no_runtime: u64,
    /// The running greenlet could not be read.
    pub unreadable: u64,
    /// No user stack could be taken (or the stack map was full).
    pub no_stack: u64,
    /// The counts map was full.
    pub count_failures: u64,
}

/// How a recording ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The duration passed.
    Done,
    /// A signal asked to stop early.
    Stopped,
    /// The target exited (or exec'ed) first.
    TargetExited,
}

/// What a recording collected, symbolized.
#[derive(Debug)]
pub struct Recording {
    /// The target.
    pub process: Process,
    /// Each (greenlet, stack) with its count, frames innermost first.
    pub stacks: Vec<Stack>,
    /// The shape of each raw stack, for the frame-pointer verdict.
    pub shapes: Vec<RawShape>,
    /// Samples of the target not in `stacks`.
    pub lost: Lost,
    /// Greenlets named by the `new` probe during the recording; `None` where every greenlet
    /// has a name without it (Python greenlets: their type's).
    pub named: Option<usize>,
    /// How it ended.
    pub ending: Ending,
    /// How long it sampled.
    pub elapsed: Duration,
    /// Whether the runtime published its layout only during the recording (or never).
    pub layout_late: bool,
    /// Whether it never did: nothing could be sampled.
    pub layout_missing: bool,
}

/// The loaded sampler and its links.
struct Sampler {
    /// Perf-event links first: dropped (detached) before the probe's.
    perf: Vec<Link>,
    probes: Vec<Link>,
    /// Last: a USDT link's detach uses the object's USDT manager, which closing the object
    /// frees.
    skel: Owned<ProfileSkel<'static>>,
}

fn bpf(action: &str) -> impl FnOnce(libbpf_rs::Error) -> Error + '_ {
    move |e| Error::Loader(crate::loader::Error::bpf(action, e))
}

impl Sampler {
    fn load() -> Result<Sampler, Error> {
        // SAFETY: the skeleton is all that borrows the storage, and it stays in the `Owned`
        // (the `Sampler`'s `skel`, never moved out) until the `Sampler` drops.
        let skel = unsafe {
            Owned::new(MaybeUninit::uninit(), |storage| {
                ProfileSkelBuilder::default()
                    .open(storage)
                    .map_err(bpf("cannot open the BPF object"))?
                    .load()
                    .map_err(bpf("cannot load the BPF programs"))
            })
        }?;
        Ok(Sampler {
            skel,
            perf: Vec::new(),
            probes: Vec::new(),
        })
    }

    fn set_layout(&self, pid: i32, l: &SampleLayout) -> Result<(), Error> {
        let value = types::gl_layout {
            tls_offset: l.tls_offset,
            state_current: l.state_current,
            state_switches: l.state_switches,
            inner_id: l.inner_id,
            inner_flags: l.inner_flags,
            state_origin: l.state_origin,
            inner_stack: l.inner_stack,
        };
        // SAFETY: `gl_layout` is a #[repr(C)] struct of integers without padding (s64 and
        // six u32), generated from bpf/sample.h; its bytes are all initialised.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&value as *const types::gl_layout).cast::<u8>(),
                std::mem::size_of::<types::gl_layout>(),
            )
        };
        self.skel
            .maps
            .layouts
            .update(&(pid as u32).to_ne_bytes(), bytes, MapFlags::ANY)
            .map_err(bpf("cannot write map \"layouts\""))
    }

    /// Attaches to `greenlet:new` of the target, for names: plain uprobes when every site
    /// passes its arguments in the ABI registers, else libbpf's USDT decoding. Sites: how many.
    fn attach_new(&mut self, process: &Process) -> Result<usize, Error> {
        let exe = process.exe();
        let notes = elf::greenlet_sites(&exe)?;
        let sites: Vec<&elf::ProbeSite> = notes.sites.iter().filter(|s| s.name == "new").collect();
        let what = "cannot attach to greenlet:new";
        if sites.iter().all(|s| s.args_in_abi_registers()) {
            for site in &sites {
                let opts = UprobeOpts {
                    ref_ctr_offset: site.semaphore_offset.unwrap_or(0) as usize,
                    ..Default::default()
                };
                let link = self
                    .skel
                    .progs
                    .prof_up_new
                    .attach_uprobe_with_opts(process.pid, &exe, site.file_offset as usize, opts)
                    .map_err(bpf(what))?;
                self.probes.push(link);
            }
        } else {
            let link = self
                .skel
                .progs
                .prof_usdt_new
                .attach_usdt(process.pid, &exe, elf::PROVIDER, "new")
                .map_err(bpf(what))?;
            self.probes.push(link);
        }
        Ok(sites.len())
    }

    fn attach_clocks(&mut self, hz: u64) -> Result<(), Error> {
        let progs = &self.skel.progs;
        let links =
            cpuclock::attach_every_cpu(Rate::Hz(hz), |fd| progs.on_sample.attach_perf_event(fd))
                .map_err(|e| match e {
                    ClockError::Open { cpu, source } => Error::PerfEvent { cpu, source },
                    ClockError::Cpus(why) => Error::Io {
                        action: "cannot count the CPUs".into(),
                        source: std::io::Error::other(why),
                    },
                    ClockError::Attach(e) => bpf("cannot attach to the cpu-clock event")(e),
                })?;
        self.perf.extend(links);
        Ok(())
    }

    fn lost(&self) -> Result<Lost, Error> {
        let per_cpu = self
            .skel
            .maps
            .stats
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf("cannot read map \"stats\""))?
            .unwrap_or_default();
        let mut lost = Lost::default();
        for bytes in per_cpu {
            let field = |i: usize| -> u64 {
                bytes
                    .get(i * 8..i * 8 + 8)
                    .map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
            };
            lost.samples += field(0);
            lost.no_runtime += field(1);
            lost.unreadable += field(2);
            lost.no_stack += field(3);
            lost.count_failures += field(4);
        }
        Ok(lost)
    }

    fn names(&self) -> BTreeMap<u64, String> {
        let map = &self.skel.maps.names;
        map.keys()
            .filter_map(|k| {
                let id = u64::from_ne_bytes(k.as_slice().try_into().ok()?);
                let v = map.lookup(&k, MapFlags::ANY).ok()??;
                let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                Some((id, String::from_utf8_lossy(&v[..end]).into_owned()))
            })
            .collect()
    }

    /// (greenlet, stack id) -> samples.
    fn counts(&self) -> Vec<(u64, u32, u64)> {
        let map = &self.skel.maps.counts;
        map.keys()
            .filter_map(|k| {
                let greenlet = u64::from_ne_bytes(k.get(0..8)?.try_into().ok()?);
                let stack = i32::from_ne_bytes(k.get(8..12)?.try_into().ok()?);
                let v = map.lookup(&k, MapFlags::ANY).ok()??;
                let n = u64::from_ne_bytes(v.get(0..8)?.try_into().ok()?);
                (stack >= 0).then_some((greenlet, stack as u32, n))
            })
            .collect()
    }

    /// The user stack `id`, innermost first.
    fn stack(&self, id: u32) -> Vec<u64> {
        let Ok(Some(bytes)) = self
            .skel
            .maps
            .stacks
            .lookup(&id.to_ne_bytes(), MapFlags::ANY)
        else {
            return Vec::new();
        };
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
            .take_while(|&ip| ip != 0)
            .collect()
    }
}

/// Records `opts.pid` for `opts.duration`, or until `stop` returns true or the target exits.
/// `started` is called once sampling runs.
pub fn record(
    opts: &Options,
    mut stop: impl FnMut() -> bool,
    started: impl FnOnce(&Process, usize),
) -> Result<Recording, Error> {
    let process = Process::find(opts.pid)?;
    process::check_bpf_privilege()?;
    let mut published = layout::read(opts.pid)?;
    let layout_late = published.is_none();
    // Before the target can exit: its mappings, and their files kept open.
    let mut symbolizer = Symbolizer::for_process(opts.pid).map_err(|e| Error::Io {
        action: format!("cannot read the mappings of process {}", opts.pid),
        source: e,
    })?;
    let mut sampler = Sampler::load()?;
    if let Some(l) = &published {
        sampler.set_layout(opts.pid, l)?;
    }
    sampler.attach_new(&process)?;
    sampler.attach_clocks(opts.hz)?;
    let begin = Instant::now();
    started(&process, sampler.perf.len());
    let deadline = begin + opts.duration;
    let ending = loop {
        if stop() {
            break Ending::Stopped;
        }
        if !process.is_alive() {
            break Ending::TargetExited;
        }
        if published.is_none() {
            // The runtime publishes its layout when it makes its first thread state.
            if let Ok(Some(l)) = layout::read(opts.pid) {
                sampler.set_layout(opts.pid, &l)?;
                published = Some(l);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break Ending::Done;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    };
    let elapsed = begin.elapsed();
    // Stop sampling before reading, so the counts do not move under the reads.
    sampler.perf.clear();
    sampler.probes.clear();
    let lost = sampler.lost()?;
    let names = sampler.names();
    let mut stacks = Vec::new();
    let mut shapes = Vec::new();
    for (greenlet, id, count) in sampler.counts() {
        let addrs = sampler.stack(id);
        let frames = symbolizer.stack(&addrs);
        shapes.push(RawShape {
            depth: addrs.len(),
            stray: addrs
                .iter()
                .skip(1)
                .filter(|&&a| !symbolizer.is_mapped(a))
                .count(),
            through_bottom: frames.iter().any(|f| is_greenlet_bottom(f)),
            count,
        });
        stacks.push(Stack {
            greenlet,
            name: names.get(&greenlet).cloned(),
            frames,
            count,
        });
    }
    Ok(Recording {
        process,
        stacks,
        shapes,
        lost,
        named: Some(names.len()),
        ending,
        elapsed,
        layout_late,
        layout_missing: published.is_none(),
    })
}
