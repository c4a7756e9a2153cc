//! A real serial line without hardware: socat's pseudo-terminal pair.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Two connected pseudo-terminals; socat is stopped on drop.
pub struct PtyPair {
    child: Child,
    /// The two ends.
    pub paths: [String; 2],
}

impl PtyPair {
    /// Starts socat and waits until both ptys exist.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let mut child = Command::new("socat")
            .args(["-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("socat is needed for the serial tests: apt-get install socat");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, path)) = line.split_once("PTY is ") {
                    let _ = tx.send(Some(path.trim().to_string()));
                } else if line.contains("starting data transfer loop") {
                    let _ = tx.send(None);
                }
            }
        });
        let mut paths = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Some(path)) => paths.push(path),
                Ok(None) if paths.len() == 2 => break,
                Ok(None) => {}
                Err(e) => panic!("socat did not report two ptys ({e}): {paths:?}"),
            }
        }
        Self {
            child,
            paths: [paths[0].clone(), paths[1].clone()],
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
