//! Facts about the traced process and about our own privileges, read from `/proc`.

use std::path::PathBuf;

use super::Error;

/// Capability numbers from `linux/capability.h`.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What the loader needs, in words an operator can act on.
pub const BPF_PRIVILEGE: &str = "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); run it as root";

/// A process, identified by PID and start time so that a reused PID is not mistaken for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// Its PID.
    pub pid: i32,
    /// Its start time in clock ticks after boot (field 22 of `/proc/PID/stat`).
    pub start_ticks: u64,
    /// Its command name (`/proc/PID/comm`).
    pub comm: String,
    /// Device and inode of its executable, to notice an `exec` (0, 0 if unreadable).
    pub exe_id: (u64, u64),
}

/// Fields of `/proc/PID/stat` after the parenthesised command name (which may hold spaces).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

/// The (state, start time) of a `/proc/PID/stat` line.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let f = stat_fields(stat)?;
    // After the name: field 3 (state) is index 0, field 22 (starttime) is index 19.
    let state = f.first()?.chars().next()?;
    let start = f.get(19)?.parse().ok()?;
    Some((state, start))
}

impl Process {
    /// The running process `pid`; `Error::NoSuchProcess` if there is none (or only a zombie).
    pub fn find(pid: i32) -> Result<Process, Error> {
        let gone = || Error::NoSuchProcess { pid };
        if pid <= 0 {
            return Err(gone());
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|_| gone())?;
        let (state, start_ticks) = parse_stat(&stat).ok_or_else(gone)?;
        if matches!(state, 'Z' | 'X' | 'x') {
            return Err(gone());
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        Ok(Process {
            pid,
            start_ticks,
            comm,
            exe_id: exe_id(pid),
        })
    }

    /// Whether this very process still runs the same program: not exited, not a zombie, its
    /// PID not reused, and no `exec` since (which takes its probes away).
    pub fn is_alive(&self) -> bool {
        Process::find(self.pid)
            .is_ok_and(|p| p.start_ticks == self.start_ticks && p.exe_id == self.exe_id)
    }

    /// Whether it is alive but runs another program now (it called `exec`).
    ///
    /// An executable that cannot be read says nothing: a process that is exiting (its memory
    /// already released, a zombie) still has its `/proc` entry and start time, but no
    /// `exe` link, and must be reported as exited, not as replaced.
    pub fn has_execed(&self) -> bool {
        Process::find(self.pid).is_ok_and(|now| self.was_replaced_by(&now))
    }

    /// Whether `now`, a later look at the same PID, is this process running another program.
    fn was_replaced_by(&self, now: &Process) -> bool {
        now.start_ticks == self.start_ticks && now.exe_id != (0, 0) && now.exe_id != self.exe_id
    }

    /// Its executable, as a path the kernel resolves even if the file was replaced.
    pub fn exe(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/exe", self.pid))
    }

    /// Its number of threads right now (0 once it is gone).
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// Device and inode of the executable of `pid`; (0, 0) when it cannot be read.
fn exe_id(pid: i32) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/exe")).map_or((0, 0), |m| (m.dev(), m.ino()))
}

/// The PIDs of the processes that run the executable file `id` (device, inode) now, in
/// increasing order: one pass over `/proc`, one `stat` per process. Zombies and this process
/// are left out.
pub fn running_exe(id: (u64, u64)) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && exe_id(pid) == id)
        .collect();
    pids.sort_unstable();
    pids
}

/// The (PID, parent PID, start time) of every process now, from one pass over `/proc`;
/// zombies are left out.
fn process_tree() -> Vec<(i32, i32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let f = stat_fields(&stat)?;
            // After the name: field 4 (ppid) is index 1.
            let ppid = f.get(1)?.parse().ok()?;
            let (state, start) = parse_stat(&stat)?;
            (!matches!(state, 'Z' | 'X' | 'x')).then_some((pid, ppid, start))
        })
        .collect()
}

/// The descendants (children, their children...) of the processes `roots` (PID, start time)
/// in `tree` (PID, parent PID, start time), in increasing PID order. A root whose PID now
/// names another process (its start time differs) has none.
pub fn descendants_in(tree: &[(i32, i32, u64)], roots: &[(i32, u64)]) -> Vec<i32> {
    use std::collections::HashMap;
    let parent: HashMap<i32, i32> = tree.iter().map(|&(p, pp, _)| (p, pp)).collect();
    let live_roots: Vec<i32> = roots
        .iter()
        .filter(|(pid, start)| tree.iter().any(|&(p, _, s)| p == *pid && s == *start))
        .map(|&(pid, _)| pid)
        .collect();
    let mut out: Vec<i32> = tree
        .iter()
        .filter(|&&(pid, _, _)| !live_roots.contains(&pid))
        .filter(|&&(pid, _, _)| {
            // Up the parent chain (bounded: a chain is never longer than the process count).
            let mut at = pid;
            for _ in 0..tree.len() {
                match parent.get(&at) {
                    Some(&pp) if live_roots.contains(&pp) => return true,
                    Some(&pp) if pp > 1 && pp != at => at = pp,
                    _ => return false,
                }
            }
            false
        })
        .map(|&(pid, _, _)| pid)
        .collect();
    out.sort_unstable();
    out
}

/// The descendants of `roots` (PID, start time) running now ([`descendants_in`] over `/proc`),
/// this process left out.
pub fn descendants(roots: &[(i32, u64)]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = descendants_in(&process_tree(), roots);
    out.retain(|&p| p != me);
    out
}

/// Device and inode of the executable file at `path` (`--exe`): a regular file someone may
/// execute; a one-line reason otherwise.
pub fn executable_id(path: &std::path::Path) -> Result<(u64, u64), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{}: no such file", path.display()),
        _ => format!("{}: {e}", path.display()),
    })?;
    if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
        return Err(format!("{}: not an executable file", path.display()));
    }
    Ok((m.dev(), m.ino()))
}

/// Parses the `CapEff:` line of `/proc/self/status`.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// Whether the effective capability set `caps` may load tracing BPF programs and open uprobes.
pub fn caps_allow_bpf(caps: u64) -> bool {
    let has = |c: u32| caps & (1u64 << c) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Fails with `Error::NotPermitted` unless this process may load tracing BPF programs.
pub fn check_bpf_privilege() -> Result<(), Error> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match parse_cap_eff(&status) {
        Some(caps) if !caps_allow_bpf(caps) => Err(Error::NotPermitted {
            action: "load BPF programs".into(),
            need: BPF_PRIVILEGE.into(),
        }),
        // Unknown (no /proc/self/status): let the kernel decide.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_follow_the_parent_chain_from_live_roots() {
        // (pid, ppid, start): 10 is a root with children 11, 12; 12 has 13; 20 is unrelated;
        // 30 was a root's PID but names another process now (start 99).
        let tree = [
            (1, 0, 1),
            (10, 1, 5),
            (11, 10, 6),
            (12, 10, 7),
            (13, 12, 8),
            (20, 1, 9),
            (30, 1, 99),
            (31, 30, 100),
        ];
        assert_eq!(descendants_in(&tree, &[(10, 5)]), [11, 12, 13]);
        assert_eq!(descendants_in(&tree, &[(12, 7)]), [13]);
        assert!(descendants_in(&tree, &[(30, 3)]).is_empty(), "a reused PID");
        assert!(descendants_in(&tree, &[(20, 9)]).is_empty());
        assert_eq!(descendants_in(&tree, &[(10, 5), (12, 7)]), [11, 13]);
    }

    #[test]
    fn an_exiting_process_without_an_exe_link_was_not_replaced() {
        let then = Process {
            pid: 42,
            start_ticks: 1000,
            comm: "python".into(),
            exe_id: (8, 77),
        };
        let later = |start_ticks, exe_id| Process {
            start_ticks,
            exe_id,
            ..then.clone()
        };
        // Exiting: its memory is gone, so `/proc/PID/exe` cannot be read.
        assert!(!then.was_replaced_by(&later(1000, (0, 0))));
        assert!(!then.was_replaced_by(&later(1000, (8, 77))));
        assert!(then.was_replaced_by(&later(1000, (8, 78))), "an exec");
        assert!(
            !then.was_replaced_by(&later(2000, (8, 78))),
            "another process"
        );
    }

    #[test]
    fn an_exec_is_seen_as_a_replaced_program() {
        // `sh` replaces itself with `sleep` after a moment.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.3; exec sleep 5"])
            .spawn()
            .expect("spawn sh");
        let pid = child.id() as i32;
        let first = Process::find(pid).expect("the shell");
        assert!(!first.has_execed());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !first.has_execed() {
            assert!(std::time::Instant::now() < deadline, "no exec seen");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!first.is_alive());
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn this_process_has_a_child_it_started() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = Process::find(std::process::id() as i32).unwrap();
        let found = descendants(&[(me.pid, me.start_ticks)]);
        child.kill().ok();
        child.wait().ok();
        assert!(found.contains(&(child.id() as i32)), "{found:?}");
    }

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 3 1 0 0 20 0 \
                    3 0 987654 1000000 100 18446744073709551615";
        assert_eq!(parse_stat(stat), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_capabilities() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let caps = parse_cap_eff(status).unwrap();
        assert!(caps_allow_bpf(caps));
        assert!(!caps_allow_bpf(0));
        assert!(caps_allow_bpf(1 << CAP_SYS_ADMIN));
        assert!(!caps_allow_bpf(1 << CAP_BPF));
        assert!(caps_allow_bpf((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn finds_itself_and_not_pid_zero() {
        let me = Process::find(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        assert!(me.threads() >= 1);
        assert!(matches!(
            Process::find(0),
            Err(Error::NoSuchProcess { pid: 0 })
        ));
        assert!(matches!(
            Process::find(-5),
            Err(Error::NoSuchProcess { .. })
        ));
    }
}
