//! The BPF objects a gltop has in the kernel for one target process, found through the `bpf`
//! syscall's id iterators: its links (uprobe-multi links carry the PID they are attached
//! to), the programs of those links and every program sharing their maps (gltop loads
//! programs it does not attach), and those maps. Specific to one target, so tests running in
//! parallel with other BPF users do not see each other's objects.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::poll_until;
use libbpf_rs::query::{
    LinkInfoIter, LinkTypeInfo, MapInfoIter, PerfEventType, ProgInfoIter, ProgInfoQueryOptions,
    ProgramInfo,
};

/// The names of the programs in `bpf/greenlet.bpf.c` and `bpf/sample.bpf.c` (whose `up_new`
/// and `usdt_new` have the same names; its perf-event and tracepoint links are on no process,
/// so its programs are found through the maps they share with its `new` probe's).
pub const PROGRAMS: [&str; 17] = [
    "up_switch",
    "up_throw",
    "up_new",
    "up_dead",
    "up_floor",
    "um_switch",
    "um_throw",
    "um_new",
    "um_dead",
    "um_floor",
    "on_fork",
    "usdt_switch",
    "usdt_throw",
    "usdt_new",
    "usdt_dead",
    "on_sample",
    "on_switch",
];

/// Ids of BPF objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Objects {
    pub links: BTreeSet<u32>,
    pub programs: BTreeSet<u32>,
    pub maps: BTreeSet<u32>,
}

impl Objects {
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.programs.is_empty() && self.maps.is_empty()
    }

    /// The objects of `self` that still exist in the kernel.
    pub fn still_loaded(&self) -> Objects {
        let links = LinkInfoIter::default()
            .map(|l| l.id)
            .collect::<BTreeSet<_>>();
        let programs = ProgInfoIter::default()
            .map(|p| p.id)
            .collect::<BTreeSet<_>>();
        let maps = MapInfoIter::default()
            .map(|m| m.id)
            .collect::<BTreeSet<_>>();
        Objects {
            links: &self.links & &links,
            programs: &self.programs & &programs,
            maps: &self.maps & &maps,
        }
    }

    /// Waits until none of these objects exists any more; what is left after `timeout`.
    pub fn wait_gone(&self, timeout: Duration) -> Objects {
        poll_until(Instant::now() + timeout, || {
            Some(self.still_loaded()).filter(Objects::is_empty)
        })
        .unwrap_or_else(|| self.still_loaded())
    }
}

fn is_gltop_program(p: &ProgramInfo) -> bool {
    p.name.to_str().is_some_and(|n| PROGRAMS.contains(&n))
}

/// The BPF links, programs and maps of the gltops attached to process `pid` right now.
///
/// A link counts when its program is one of gltop's and it is a uprobe-multi link on `pid`
/// (libbpf's USDT mode on kernels since 6.6, and `--follow`), or a perf-event uprobe on the
/// executable of `pid` (gltop's default per-process uprobes, named by the path gltop gave,
/// such as `/proc/PID/exe`; the link records no PID).
pub fn gltop_objects(pid: i32) -> Objects {
    let programs: Vec<ProgramInfo> =
        ProgInfoIter::with_query_opts(ProgInfoQueryOptions::default().include_map_ids(true))
            .filter(is_gltop_program)
            .collect();
    let exe = std::fs::canonicalize(format!("/proc/{pid}/exe")).ok();
    let on_target = |info: &LinkTypeInfo| match info {
        LinkTypeInfo::UprobeMulti(u) => u.pid == pid as u32,
        LinkTypeInfo::PerfEvent(p) => match &p.event_type {
            PerfEventType::Uprobe {
                file_name: Some(f), ..
            } => exe.is_some() && std::fs::canonicalize(f).ok() == exe,
            _ => false,
        },
        _ => false,
    };
    let mut out = Objects::default();
    for link in LinkInfoIter::default() {
        if programs.iter().any(|p| p.id == link.prog_id) && on_target(&link.info) {
            out.links.insert(link.id);
            out.programs.insert(link.prog_id);
        }
    }
    for p in programs.iter().filter(|p| out.programs.contains(&p.id)) {
        out.maps.extend(p.map_ids.iter().copied());
    }
    // The programs loaded with those maps but not attached (the other attach mode's), and
    // the maps only they use.
    for p in &programs {
        if p.map_ids.iter().any(|m| out.maps.contains(m)) {
            out.programs.insert(p.id);
        }
    }
    for p in programs.iter().filter(|p| out.programs.contains(&p.id)) {
        out.maps.extend(p.map_ids.iter().copied());
    }
    out
}
