//! Test peers for the `s3://` tests: a real moto server and the lab's fault proxy, each started
//! on a free loopback port and killed (by PID, through `Child`) when dropped.
//!
//! moto is found through `KPROV_MOTO_SERVER`, then `$KPROV_PEERS/venv/bin/moto_server`, then
//! `/opt/kprov-peers/venv/bin/moto_server`, then `moto_server` on `PATH`. A missing moto fails
//! the test with the install step, unless `KPROV_SKIP_PEERS=1` is set, in which case the test
//! prints a loud SKIPPED line and passes.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kprov_state::s3::{Credentials, S3Options, S3Store};

/// Where the installed peers live (tests/peers/install.sh puts them here).
pub const PEERS_VENV_MOTO: &str = "/opt/kprov-peers/venv/bin/moto_server";

/// A child process killed when dropped.
pub struct Peer {
    child: Child,
    log: PathBuf,
    what: String,
}

impl Peer {
    fn spawn(what: &str, cmd: &mut Command, log: PathBuf) -> Peer {
        let out = std::fs::File::create(&log).expect("create peer log");
        let err = out.try_clone().expect("clone log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        Peer {
            child,
            log,
            what: what.into(),
        }
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        s.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Poll `GET path` on `port` until it answers 200, or panic with the peer's log.
    fn wait_ready(&mut self, port: u16, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited early ({status}); its log:\n{}",
                    self.what,
                    self.log_tail()
                );
            }
            if matches!(http(port, "GET", path, ""), Ok((200, _))) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not answer GET {path} on port {port} within 90 s; its log:\n{}",
                    self.what,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        // Only the process we started, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.0 request to 127.0.0.1:`port`; returns status and body.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// The moto_server binary, if installed.
pub fn moto_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KPROV_MOTO_SERVER") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "KPROV_MOTO_SERVER={} does not exist",
            p.display()
        );
        return Some(p);
    }
    // install.sh honours KPROV_PEERS as the peers directory; look there first.
    if let Some(peers) = std::env::var_os("KPROV_PEERS") {
        let p = PathBuf::from(peers).join("venv/bin/moto_server");
        if p.is_file() {
            return Some(p);
        }
    }
    let venv = Path::new(PEERS_VENV_MOTO);
    if venv.is_file() {
        return Some(venv.to_path_buf());
    }
    on_path("moto_server")
}

/// A running moto server.
pub struct Moto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The moto_server binary (its directory also has a python for the fault proxy).
    pub binary: PathBuf,
    // Declared before `dir` so the process dies before its log directory is removed.
    peer: Peer,
    dir: tempfile::TempDir,
}

impl Moto {
    /// Start moto on a free port, or `None` when moto is missing and `KPROV_SKIP_PEERS=1`.
    pub fn start() -> Option<Moto> {
        let Some(binary) = moto_binary() else {
            if std::env::var("KPROV_SKIP_PEERS").as_deref() == Ok("1") {
                eprintln!(
                    "\n*** SKIPPED: moto_server not found and KPROV_SKIP_PEERS=1: the s3:// state store tests did NOT run \
                     (install moto with `bash tests/peers/install.sh`) ***\n"
                );
                return None;
            }
            panic!(
                "moto_server not found (looked at $KPROV_MOTO_SERVER, $KPROV_PEERS/venv/bin, {PEERS_VENV_MOTO}, and PATH): install the test \
                 peers with `bash tests/peers/install.sh`, or set KPROV_SKIP_PEERS=1 to skip these tests"
            );
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut peer = Peer::spawn(
            "moto_server",
            Command::new(&binary).args(["-H", "127.0.0.1", "-p", &port.to_string()]),
            dir.path().join("moto.log"),
        );
        peer.wait_ready(port, "/moto-api/");
        Some(Moto {
            port,
            binary,
            peer,
            dir,
        })
    }

    /// Endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A python to run the fault proxy with: the one next to moto_server, else python3.
    fn python(&self) -> PathBuf {
        let dir = self.binary.parent().unwrap_or(Path::new("."));
        ["python3", "python"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .or_else(|| on_path("python3"))
            .expect("python3 for the fault proxy")
    }
}

/// The lab's fault proxy (tests/peers/faultproxy.py, shared with the AWS tests) in front of moto.
pub struct FaultProxy {
    /// Its port on 127.0.0.1 (kept across restarts).
    pub port: u16,
    upstream: u16,
    python: PathBuf,
    peer: Option<Peer>,
    dir: tempfile::TempDir,
}

impl FaultProxy {
    /// Start a proxy on a free port forwarding to `moto`.
    pub fn start(moto: &Moto) -> FaultProxy {
        let mut p = FaultProxy {
            port: free_port(),
            upstream: moto.port,
            python: moto.python(),
            peer: None,
            dir: tempfile::tempdir().unwrap(),
        };
        p.restart();
        p
    }

    /// Endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kill the proxy: the endpoint refuses connections until [`FaultProxy::restart`].
    pub fn stop(&mut self) {
        self.peer = None;
    }

    /// (Re)start the proxy on the same port (rules start empty).
    pub fn restart(&mut self) {
        self.stop();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/faultproxy.py");
        let mut peer = Peer::spawn(
            "faultproxy.py",
            Command::new(&self.python).arg(script).args([
                "--listen",
                &self.port.to_string(),
                "--upstream",
                &format!("http://127.0.0.1:{}", self.upstream),
            ]),
            self.dir.path().join("proxy.log"),
        );
        peer.wait_ready(self.port, "/__fault__/rules");
        self.peer = Some(peer);
    }

    /// Replace the rules (JSON list, see faultproxy.py).
    pub fn set_rules(&self, json: &str) {
        let (status, body) = http(self.port, "POST", "/__fault__/rules", json).unwrap();
        assert_eq!(status, 200, "setting proxy rules failed: {body}");
    }

    /// Clear the rules and hit counters.
    pub fn clear(&self) {
        let (status, body) = http(self.port, "DELETE", "/__fault__/rules", "").unwrap();
        assert_eq!(status, 200, "clearing proxy rules failed: {body}");
    }

    /// The proxy's rules-and-hits JSON.
    pub fn state(&self) -> String {
        http(self.port, "GET", "/__fault__/rules", "").unwrap().1
    }
}

/// Options pointing at `endpoint` with dummy credentials and a short retry backoff; set on the
/// SDK config builder, not in the process environment.
pub fn options(endpoint: &str) -> S3Options {
    S3Options {
        endpoint: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        credentials: Some(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "kprov-static",
        )),
        initial_backoff: Duration::from_millis(20),
        ..S3Options::default()
    }
}

/// Open `url` at `endpoint` with [`options`], adjusted by `tweak`.
pub async fn store(endpoint: &str, url: &str, tweak: impl FnOnce(&mut S3Options)) -> S3Store {
    let mut o = options(endpoint);
    tweak(&mut o);
    S3Store::open(url, o).await.unwrap()
}

/// Create the store's bucket.
pub async fn create_bucket(s: &S3Store) {
    s.client()
        .create_bucket()
        .bucket(s.bucket())
        .send()
        .await
        .unwrap();
}

/// Every object key in the store's bucket (raw, prefix included).
pub async fn raw_keys(s: &S3Store) -> Vec<String> {
    let out = s
        .client()
        .list_objects_v2()
        .bucket(s.bucket())
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

/// An object's raw bytes, read directly through the SDK.
pub async fn raw_get(s: &S3Store, key: &str) -> Vec<u8> {
    let out = s
        .client()
        .get_object()
        .bucket(s.bucket())
        .key(s.object_key(key))
        .send()
        .await
        .unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// Log lines captured from `tracing` by a process-wide subscriber.
///
/// Process-wide rather than `set_default` per test: tracing caches per-callsite interest, and a
/// callsite first hit on another test's thread while a thread-local subscriber is being set up
/// can stay disabled for it. Tests that read logs live in their own binary and install this
/// first thing.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// The process-wide capture (installed on first call).
    pub fn global() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let w = logs.clone();
            tracing_subscriber::fmt()
                .with_writer(move || LogWriter(w.0.clone()))
                .with_ansi(false)
                .with_max_level(tracing::Level::WARN)
                .init();
            logs
        })
        .clone()
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
