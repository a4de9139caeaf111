//! Headless Chromium for the web view's tests, driven through
//! `tests/browser/cdp.py` (the DevTools protocol over a pipe; Python's
//! standard library only).
//!
//! The browser reaches loopback and nothing else, so a page that needs the
//! network shows up as an error, and [`Browser::assert_clean`] fails a test
//! on any console error, uncaught exception or request off the machine.
//!
//! ```no_run
//! # use std::time::Duration;
//! let mut b = toil_tests::browser::Browser::start();
//! b.open("http://127.0.0.1:8080/?token=...");
//! b.wait("the table", "document.querySelectorAll('tbody tr').length > 0", Duration::from_secs(30));
//! b.screenshot(&toil_tests::browser::artifact("web", "jobs.png"));
//! b.assert_clean();
//! ```

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness;

/// One headless browser with one page.
pub struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

/// What went wrong on the page so far.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Problems {
    /// `console.error` calls and browser log errors (failed loads, CSP
    /// violations).
    pub console_errors: Vec<String>,
    /// Uncaught exceptions.
    pub exceptions: Vec<String>,
    /// Requests to anything but loopback.
    pub off_loopback_requests: Vec<String>,
    /// How many requests the page made.
    pub requests: u64,
}

/// Where a test's artifact `name` goes: `target/test-artifacts/GROUP/NAME`.
pub fn artifact(group: &str, name: &str) -> PathBuf {
    let dir = harness::repo_root()
        .join("target/test-artifacts")
        .join(group);
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

impl Browser {
    /// Starts Chromium (`/usr/bin/chromium`, or `TOIL_TEST_CHROMIUM`).
    /// Panics with an install hint when it is missing.
    pub fn start() -> Browser {
        let script = harness::repo_root().join("tests/browser/cdp.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout")));
        let mut b = Browser {
            child,
            stdin,
            stdout,
        };
        // The driver answers this only once the browser is up (or says why
        // it could not start it).
        b.command(json!({"op": "eval", "js": "1"}));
        b
    }

    /// Sends one command and returns its value; panics with the driver's
    /// error.
    fn command(&mut self, cmd: Value) -> Value {
        match self.try_command(cmd.clone()) {
            Ok(v) => v,
            Err(e) => panic!("browser: {e} (command {cmd})"),
        }
    }

    /// Sends one command: its value, or the driver's error.
    pub fn try_command(&mut self, cmd: Value) -> Result<Value, String> {
        let stdin = self.stdin.as_mut().ok_or("the browser is closed")?;
        writeln!(stdin, "{cmd}")
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("the browser driver is gone: {e}"))?;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the browser driver exited (see its stderr above)".into());
            }
            if !line.trim().is_empty() {
                break;
            }
        }
        let reply: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
        if reply["ok"] == Value::Bool(true) {
            Ok(reply["value"].clone())
        } else {
            Err(reply["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_string())
        }
    }

    /// Opens `url` and waits for its load event.
    pub fn open(&mut self, url: &str) {
        self.command(json!({"op": "open", "url": url}));
    }

    /// Evaluates `js` in the page (a promise is awaited) and returns its
    /// value.
    pub fn eval(&mut self, js: &str) -> Value {
        self.command(json!({"op": "eval", "js": js}))
    }

    /// Polls `js` until it is truthy and returns that value; after
    /// `timeout`, fails the test naming `what` and the last value.
    pub fn wait(&mut self, what: &str, js: &str, timeout: Duration) -> Value {
        let cmd = json!({"op": "wait", "js": js, "timeout_s": timeout.as_secs_f64()});
        match self.try_command(cmd) {
            Ok(v) => v,
            Err(e) => {
                let shot = artifact("failures", &format!("{}.png", sanitize(what)));
                let _ = self.try_command(json!({"op": "screenshot", "path": shot}));
                panic!(
                    "browser: waiting for {what}: {e} (screenshot in {})",
                    shot.display()
                )
            }
        }
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let size = self.command(json!({"op": "screenshot", "path": path}));
        assert!(
            size.as_u64().unwrap_or(0) > 1000,
            "screenshot {} is empty",
            path.display()
        );
    }

    /// Console errors, exceptions and off-machine requests so far.
    pub fn problems(&mut self) -> Problems {
        let v = self.command(json!({"op": "report"}));
        serde_json::from_value(v).unwrap_or_else(|e| panic!("browser report: {e}"))
    }

    /// Fails the test if the page logged an error, threw, or asked for
    /// anything off the machine.
    pub fn assert_clean(&mut self) {
        let p = self.problems();
        assert!(
            p.console_errors.is_empty() && p.exceptions.is_empty(),
            "the page logged errors: {:?}; exceptions: {:?}",
            p.console_errors,
            p.exceptions
        );
        assert!(
            p.off_loopback_requests.is_empty(),
            "the page asked for something off the machine: {:?}",
            p.off_loopback_requests
        );
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(60)
        .collect()
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing stdin makes the driver quit the browser and remove its
        // profile.
        drop(self.stdin.take());
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
