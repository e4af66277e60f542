//! A detached tmux session to drive gltop's TUI in, and to capture its screen.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{bpf_privilege, poll_until, require, tool};

/// Whether `test`, which drives gltop in tmux, can run here: [`require`] of BPF privilege
/// and tmux.
pub fn bpf_and_tmux_or_skip(test: &str) -> bool {
    require(test, bpf_privilege().and_then(|()| tool("tmux", "-V")))
}

/// A tmux session on a tmux server of its own (its own socket, `tmux -L`), killed with its
/// server when dropped.
///
/// One server per session: with a shared server, the last session's teardown makes the server
/// exit while another test's `new-session` is connecting to it ("server exited unexpectedly").
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
        let ok = tmux_command(&name)
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
        assert!(ok, "tmux new-session -s {name} failed");
        Tmux { name }
    }

    pub fn screen(&self) -> String {
        let out = tmux_command(&self.name)
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen with its attributes as escape sequences (`capture-pane -e`).
    pub fn styled_screen(&self) -> String {
        let out = tmux_command(&self.name)
            .args(["capture-pane", "-p", "-e", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        let status = tmux_command(&self.name)
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    /// Waits until the screen satisfies `pred`; the screen, or a panic with the last one.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_capture(what, timeout, Tmux::screen, pred)
    }

    /// [`Tmux::wait_for`] on the screen with its attributes ([`Tmux::styled_screen`]).
    pub fn wait_for_styled(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_capture(what, timeout, Tmux::styled_screen, pred)
    }

    fn wait_capture(
        &self,
        what: &str,
        timeout: Duration,
        capture: fn(&Tmux) -> String,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        poll_until(Instant::now() + timeout, || {
            Some(capture(self)).filter(|s| pred(s))
        })
        .unwrap_or_else(|| panic!("timed out waiting for {what}; screen:\n{}", self.screen()))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = tmux_command(&self.name).arg("kill-server").status();
    }
}

/// `tmux -L NAME`: a command for the server whose socket is named after the session.
fn tmux_command(name: &str) -> Command {
    let mut command = Command::new("tmux");
    command.args(["-L", name]);
    command
}
