//! Names of x86-64 system calls, for the blocking detector's off-CPU episodes (the number is
//! the task's `orig_ax` when it blocked). Only the calls a thread commonly blocks in are named;
//! any other shows as its number.

/// (number, name) on x86-64 (arch/x86/entry/syscalls/syscall_64.tbl).
const X86_64: &[(i64, &str)] = &[
    (0, "read"),
    (1, "write"),
    (2, "open"),
    (3, "close"),
    (4, "stat"),
    (5, "fstat"),
    (7, "poll"),
    (9, "mmap"),
    (10, "mprotect"),
    (11, "munmap"),
    (16, "ioctl"),
    (17, "pread64"),
    (18, "pwrite64"),
    (19, "readv"),
    (20, "writev"),
    (23, "select"),
    (24, "sched_yield"),
    (34, "pause"),
    (35, "nanosleep"),
    (40, "sendfile"),
    (42, "connect"),
    (43, "accept"),
    (44, "sendto"),
    (45, "recvfrom"),
    (46, "sendmsg"),
    (47, "recvmsg"),
    (56, "clone"),
    (57, "fork"),
    (59, "execve"),
    (61, "wait4"),
    (62, "kill"),
    (72, "fcntl"),
    (73, "flock"),
    (74, "fsync"),
    (75, "fdatasync"),
    (202, "futex"),
    (230, "clock_nanosleep"),
    (232, "epoll_wait"),
    (247, "waitid"),
    (257, "openat"),
    (270, "pselect6"),
    (271, "ppoll"),
    (281, "epoll_pwait"),
    (288, "accept4"),
    (295, "preadv"),
    (296, "pwritev"),
    (299, "recvmmsg"),
    (307, "sendmmsg"),
    (426, "io_uring_enter"),
    (441, "epoll_pwait2"),
];

/// The name of system call `nr` (`None` for a negative number: not in a system call).
pub fn name(nr: i64) -> Option<String> {
    if nr < 0 {
        return None;
    }
    Some(match X86_64.iter().find(|(n, _)| *n == nr) {
        Some((_, name)) => (*name).to_string(),
        None => format!("syscall {nr}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_numbers_and_numbers_the_rest() {
        assert_eq!(name(0).as_deref(), Some("read"));
        assert_eq!(name(35).as_deref(), Some("nanosleep"));
        assert_eq!(name(230).as_deref(), Some("clock_nanosleep"));
        assert_eq!(name(999).as_deref(), Some("syscall 999"));
        assert_eq!(name(-1), None);
        let mut nrs: Vec<i64> = X86_64.iter().map(|(n, _)| *n).collect();
        nrs.dedup();
        assert_eq!(nrs.len(), X86_64.len(), "one name per number, sorted");
        assert!(nrs.windows(2).all(|w| w[0] < w[1]));
    }
}
