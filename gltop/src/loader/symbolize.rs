//! Symbolizing user-space addresses of a traced process: one job, pid + addresses -> frame
//! names, with blazesym (ELF symbols and DWARF of the process's mapped files, names
//! demangled). Frames it cannot name are shown as their address.

use blazesym::symbolize::source::{Process as ProcessSource, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::Pid;

/// Names the frames of one process's stacks; keeps what it parsed between calls.
pub struct Frames {
    symbolizer: Symbolizer,
    pid: u32,
}

impl std::fmt::Debug for Frames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames").field("pid", &self.pid).finish()
    }
}

impl Frames {
    /// A symbolizer for the addresses of process `pid`.
    pub fn new(pid: i32) -> Frames {
        Frames {
            symbolizer: Symbolizer::new(),
            pid: pid as u32,
        }
    }

    /// One name per address, in order: the function (with the functions inlined into it at
    /// that address, innermost first), or `0x...` when it cannot be named.
    pub fn names(&self, addrs: &[u64]) -> Vec<String> {
        let unknown = |a: &u64| format!("{a:#x}");
        if addrs.is_empty() {
            return Vec::new();
        }
        let src = Source::Process(ProcessSource::new(Pid::from(self.pid)));
        let syms = match self.symbolizer.symbolize(&src, Input::AbsAddr(addrs)) {
            Ok(s) => s,
            Err(e) => {
                if std::env::var_os("GLTOP_DEBUG").is_some() {
                    eprintln!("gltop: cannot symbolize in process {}: {e:#}", self.pid);
                }
                return addrs.iter().map(unknown).collect();
            }
        };
        syms.iter()
            .zip(addrs)
            .map(|(s, a)| match s {
                Symbolized::Sym(sym) => {
                    let mut name = String::new();
                    for f in sym.inlined.iter().rev() {
                        name.push_str(&f.name);
                        name.push_str(" <- ");
                    }
                    name.push_str(&sym.name);
                    name
                }
                Symbolized::Unknown(why) => {
                    if std::env::var_os("GLTOP_DEBUG").is_some() {
                        eprintln!("gltop: {a:#x} of process {}: {why}", self.pid);
                    }
                    unknown(a)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_symbolize() -> u64 {
        marker_function_for_symbolize as *const () as usize as u64
    }

    #[test]
    fn names_a_function_of_this_process() {
        let addr = marker_function_for_symbolize();
        let names = Frames::new(std::process::id() as i32).names(&[addr, 1]);
        assert_eq!(names.len(), 2);
        assert!(
            names[0].contains("marker_function_for_symbolize"),
            "{names:?}"
        );
        assert_eq!(names[1], "0x1");
    }
}
