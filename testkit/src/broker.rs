//! A real MQTT broker for tests: Debian's mosquitto on 127.0.0.1 with the
//! project's configuration (`scripts/mosquitto.conf`), persistence in a
//! scratch directory so a restart keeps retained messages and sessions.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Where Debian's package installs the broker.
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A running (or stopped) mosquitto.
pub struct Broker {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// The listener's TLS settings, for a TLS broker.
    tls: Option<Tls>,
}

/// How a TLS broker listens.
enum Tls {
    /// With this certificate chain and key; any client may connect.
    Server(PathBuf, PathBuf),
    /// The project's certificate-authenticated broker
    /// (`scripts/mosquitto-mtls.conf` with `scripts/mosquitto-latentcam.acl`):
    /// clients need a certificate signed by the CA.
    Mutual {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
        workers: Vec<String>,
    },
}

impl Broker {
    /// Starts a broker on a free port with its configuration, database and
    /// log in `dir` (created if needed). Panics with the broker's log when
    /// it does not come up within 10 s.
    pub fn start(dir: &Path) -> Broker {
        Self::start_with(dir, None)
    }

    /// The same, listening with TLS only, with this certificate chain and
    /// private key (PEM files mosquitto's user can read).
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path) -> Broker {
        Self::start_with(
            dir,
            Some(Tls::Server(cert.to_path_buf(), key.to_path_buf())),
        )
    }

    /// The broker the README's security section describes, exactly as
    /// shipped (`scripts/mosquitto-mtls.conf` and
    /// `scripts/mosquitto-latentcam.acl`): TLS with this certificate and
    /// key, a client certificate signed by `ca` required of every client,
    /// its common name the client's identity in the ACL, and one ACL block
    /// for each host worker named in `workers`, as `scripts/mqtt-certs.sh`
    /// tells an operator to add.
    pub fn start_mutual_tls(
        dir: &Path,
        ca: &Path,
        cert: &Path,
        key: &Path,
        workers: &[&str],
    ) -> Broker {
        Self::start_with(
            dir,
            Some(Tls::Mutual {
                ca: ca.to_path_buf(),
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                workers: workers.iter().map(|w| w.to_string()).collect(),
            }),
        )
    }

    fn start_with(dir: &Path, tls: Option<Tls>) -> Broker {
        std::fs::create_dir_all(dir).expect("create the broker's directory");
        // mosquitto started as root drops to the `mosquitto` user, which
        // must be able to write its database and log here.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        let mut broker = Broker {
            port,
            dir: dir.to_path_buf(),
            child: None,
            tls,
        };
        broker.start_again();
        broker
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// Stops the broker with SIGTERM and waits for it, so it saves its
    /// database (retained messages, sessions, queued messages).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mosquitto ignored SIGTERM for 10 s; log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same port with the same directory
    /// (after [`Broker::stop`]); waits until it accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the broker is already running");
        assert!(
            Path::new(MOSQUITTO).is_file(),
            "{MOSQUITTO} is missing: run scripts/setup.sh (it installs Debian's mosquitto)"
        );
        let scripts = crate::repo().join("scripts");
        let template = match &self.tls {
            Some(Tls::Mutual { .. }) => scripts.join("mosquitto-mtls.conf"),
            _ => scripts.join("mosquitto.conf"),
        };
        let text = std::fs::read_to_string(&template)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", template.display()));
        let dir = self.dir.display().to_string();
        let dir = dir.trim_end_matches('/');
        let conf = self.dir.join("mosquitto.conf");
        let mut text = text
            .replace("@PORT@", &self.port.to_string())
            .replace("@BIND@", "127.0.0.1")
            .replace("@DIR@", dir);
        match &self.tls {
            None => {}
            Some(Tls::Server(cert, key)) => {
                // Options that follow a `listener` line belong to it.
                let listener = format!("listener {} 127.0.0.1\n", self.port);
                let with_tls = format!(
                    "{listener}certfile {}\nkeyfile {}\n",
                    cert.display(),
                    key.display()
                );
                text = text.replace(&listener, &with_tls);
            }
            Some(Tls::Mutual {
                ca,
                cert,
                key,
                workers,
            }) => {
                // A copy beside the database (mosquitto's user may not be
                // able to reach the checkout, under /root say), with the
                // workers' blocks added.
                let acl = self.dir.join("latentcam.acl");
                let mut rules = std::fs::read_to_string(scripts.join("mosquitto-latentcam.acl"))
                    .expect("read the ACL file");
                for worker in workers {
                    rules.push_str(&format!(
                        "\nuser _latentcam-host-{worker}\ntopic readwrite latentcam/#\n"
                    ));
                }
                std::fs::write(&acl, rules).expect("write the ACL file");
                text = text
                    .replace("@CA@", &ca.display().to_string())
                    .replace("@CERT@", &cert.display().to_string())
                    .replace("@KEY@", &key.display().to_string())
                    .replace("@ACL@", &acl.display().to_string());
            }
        }
        assert!(
            !text.contains('@'),
            "a placeholder is left in {}",
            template.display()
        );
        std::fs::write(&conf, text).expect("write the broker's configuration");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {MOSQUITTO}: {e} (run scripts/setup.sh)"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                panic!(
                    "mosquitto did not listen on port {} ({}); log:\n{}",
                    self.port,
                    match exited {
                        Some(status) => format!("exited: {status}"),
                        None => "timed out after 10 s".to_string(),
                    },
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
