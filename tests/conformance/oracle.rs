//! The reference side: `conformance/interp.py --server` on Python greenlet, kept running as a
//! co-process. Scripts go in as JSON lines, transcripts come back as JSON lines, so thousands
//! of scripts cost one Python start-up.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::script::Script;

/// The greenlet release the reference transcripts come from.
pub const GREENLET_VERSION: &str = "3.5.6";

pub struct Oracle {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

fn python() -> String {
    std::env::var("CONFORMANCE_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn interp_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/interp.py")
}

/// Whether Python with the reference greenlet is here; `Err` says why not.
pub fn available() -> Result<(), String> {
    let out = Command::new(python())
        .args(["-c", "import greenlet; print(greenlet.__version__)"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot import greenlet (pip install greenlet=={GREENLET_VERSION})",
            python()
        ));
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if version != GREENLET_VERSION {
        return Err(format!(
            "Python greenlet is {version}, the reference is {GREENLET_VERSION}"
        ));
    }
    Ok(())
}

impl Oracle {
    pub fn start() -> Oracle {
        let mut child = Command::new(python())
            .arg(interp_path())
            .arg("--server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start the Python interpreter");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Oracle {
            child,
            stdin,
            stdout,
        }
    }

    /// The transcript of one script.
    pub fn run(&mut self, script: &Script) -> Vec<String> {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", serde_json::to_string(script).unwrap()).unwrap();
        stdin.flush().unwrap();
        self.read_one()
    }

    fn read_one(&mut self) -> Vec<String> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .expect("reading from Python");
        assert!(n > 0, "the Python interpreter exited early");
        serde_json::from_str(&line).expect("a transcript from Python")
    }

    /// The transcripts of many scripts. A writer thread feeds Python while this thread reads,
    /// so neither pipe fills up; `each` sees transcript `i` as soon as it arrives.
    pub fn run_batch(&mut self, scripts: &[Script], mut each: impl FnMut(usize, Vec<String>)) {
        let lines: Vec<String> = scripts
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        let mut stdin = self.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            for l in &lines {
                writeln!(stdin, "{l}").unwrap();
            }
            stdin.flush().unwrap();
            stdin
        });
        for i in 0..scripts.len() {
            let t = self.read_one();
            each(i, t);
        }
        self.stdin = Some(writer.join().unwrap());
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
