//! Helpers shared by the integration tests: unique object names that are
//! removed afterwards, and helper processes (the test binary re-executed)
//! watched by a watchdog so that a hang fails the test instead of CI.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The environment variable that tells a re-executed test binary which
/// helper role to play.
pub const ROLE: &str = "SSM_TEST_ROLE";

/// A shared memory name unique to this test process, unlinked on drop.
pub struct Name(pub String);

impl Name {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Name(format!("/ssm-test-{}-{tag}-{n}", std::process::id()))
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = ssm::Pool::unlink(&self.0);
    }
}

/// A helper process: this test binary, re-executed to run only the test
/// named `entry`, which dispatches on the role in the environment.
pub struct Helper {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    /// Starts `role` with `args` (passed as `SSM_ARG_<KEY>` variables).
    pub fn spawn(entry: &str, role: &str, args: &[(&str, String)]) -> Helper {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
        cmd.args([entry, "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in args {
            cmd.env(format!("SSM_ARG_{}", k.to_uppercase()), v);
        }
        let mut child = cmd.spawn().expect("spawn helper process");
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                // The test harness prints its own lines; ours are tagged.
                if let Some(msg) = line.strip_prefix("SSM:") {
                    if tx.send(msg.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        Helper {
            child,
            stdin,
            lines: rx,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next tagged line the helper printed, within `timeout`.
    pub fn recv(&self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(e) => panic!("helper {} sent nothing within {timeout:?}: {e}", self.pid()),
        }
    }

    /// Sends a line to the helper's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("helper stdin");
        writeln!(stdin, "{line}").expect("write to helper");
        stdin.flush().unwrap();
    }

    /// Kills the helper with SIGKILL and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the helper to exit, killing it and failing the test if it
    /// takes longer than `timeout`.
    pub fn wait(mut self, timeout: Duration) -> ExitStatus {
        drop(self.stdin.take());
        let pid = self.child.id();
        let (tx, rx) = mpsc::channel();
        let mut child = self.child;
        let waiter = std::thread::spawn(move || {
            let st = child.wait();
            let _ = tx.send(());
            st
        });
        if rx.recv_timeout(timeout).is_err() {
            // SAFETY: sending a signal to our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = waiter.join();
            panic!("helper {pid} hung: killed after {timeout:?}");
        }
        waiter.join().unwrap().expect("wait for helper")
    }

    /// Waits and asserts a zero exit status.
    pub fn success(self, timeout: Duration) {
        let pid = self.pid();
        let st = self.wait(timeout);
        assert!(st.success(), "helper {pid} failed: {st}");
    }
}

/// In a helper process: the value of argument `key`.
pub fn arg(key: &str) -> String {
    std::env::var(format!("SSM_ARG_{}", key.to_uppercase()))
        .unwrap_or_else(|_| panic!("helper argument {key} missing"))
}

/// In a helper process: prints a tagged line for the parent.
pub fn say(msg: impl std::fmt::Display) {
    println!("SSM:{msg}");
    std::io::stdout().flush().unwrap();
}

/// In a helper process: the next line from the parent.
pub fn hear() -> String {
    let mut s = String::new();
    std::io::stdin()
        .read_line(&mut s)
        .expect("read from parent");
    s.trim().to_string()
}

/// The role this process plays, if it is a helper.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// Runs `body` on a thread and fails if it does not finish in `timeout`.
pub fn within<T: Send + 'static>(
    timeout: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = body();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(timeout) {
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("did not finish within {timeout:?}"),
        _ => h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
    }
}

/// Polls `cond` until it holds; fails the test after `timeout`. For
/// conditions nothing signals (another process registering as a waiter).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        std::thread::yield_now();
    }
}
