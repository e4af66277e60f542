//! A detached tmux session to drive gltop's TUI in, and to capture its screen.

use std::process::Command;
use std::time::{Duration, Instant};

/// Whether tmux is installed. Outside CI a missing tmux skips the test with a printed reason;
/// under `CI=true` it fails the test.
pub fn tmux_or_skip() -> bool {
    super::tool_or_skip("tmux", "-V")
}

/// A tmux session of our own, killed (by its name) when dropped.
pub struct Tmux {
    name: String,
}

impl Tmux {
    /// A 160x50 session running `command`.
    pub fn start(tag: &str, command: &str) -> Tmux {
        Tmux::start_sized(tag, command, 160, 50)
    }

    /// A session `columns` wide and `lines` high running `command`.
    pub fn start_sized(tag: &str, command: &str, columns: u16, lines: u16) -> Tmux {
        let name = format!("gltop-test-{}-{tag}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                &columns.to_string(),
                "-y",
                &lines.to_string(),
                command,
            ])
            .status()
            .expect("run tmux")
            .success();
        assert!(ok, "tmux new-session failed");
        Tmux { name }
    }

    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen with its attributes as escape sequences (`capture-pane -e`).
    pub fn styled_screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-e", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    /// Waits until the screen satisfies `pred`; the screen, or a panic with the last one.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}
