//! A real moto server (EC2, ELBv2 and S3 on one port) on a free loopback port, with kprov's
//! recommended validation switches, stopped by PID when dropped.
//!
//! moto is found through `KPROV_MOTO_SERVER`, then `$KPROV_PEERS/venv/bin/moto_server`, then
//! `/opt/kprov-peers/venv/bin/moto_server`, then `moto_server` on `PATH`. A missing moto fails
//! the test with the install step, unless `KPROV_SKIP_PEERS=1`, in which case the test prints a
//! loud SKIPPED line and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::peers::{on_path, skipping};
use crate::ports::free_port;
use crate::process::ChildGuard;
use crate::raw_http;

/// Where tests/peers/install.sh puts moto.
pub const PEERS_VENV_MOTO: &str = "/opt/kprov-peers/venv/bin/moto_server";

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
    _guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Start moto on a free port, or `None` when moto is missing and `KPROV_SKIP_PEERS=1`
    /// (`what` names the tests that then did not run).
    pub fn start(what: &str) -> Option<Moto> {
        let Some(binary) = moto_binary() else {
            if skipping() {
                eprintln!(
                    "\n*** SKIPPED: moto_server not found and KPROV_SKIP_PEERS=1: {what} did NOT run \
                     (install moto with `bash tests/peers/install.sh`) ***\n"
                );
                return None;
            }
            panic!(
                "moto_server not found (looked at $KPROV_MOTO_SERVER, $KPROV_PEERS/venv/bin, {PEERS_VENV_MOTO}, and PATH): \
                 install the test peers with `bash tests/peers/install.sh`, or set KPROV_SKIP_PEERS=1 to skip {what}"
            );
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut guard = ChildGuard::spawn(
            "moto_server",
            Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "1")
                .env("MOTO_ENABLE_AMI_VALIDATION", "1")
                .env("MOTO_ENABLE_KEYPAIR_VALIDATION", "1"),
            &dir.path().join("moto.log"),
        );
        guard.wait_ready(port, "/moto-api/");
        Some(Moto {
            port,
            binary,
            _guard: guard,
            _dir: dir,
        })
    }

    /// Endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Wipe every service's state (moto's own reset; default VPC and AMIs come back).
    pub fn reset(&self) {
        let (status, body) = raw_http::request(self.port, "POST", "/moto-api/reset", "").unwrap();
        assert_eq!(status, 200, "moto reset failed: {body}");
    }

    /// A python to run the fault proxy with: the one next to moto_server, else python3.
    pub fn python(&self) -> PathBuf {
        let dir = self.binary.parent().unwrap_or(Path::new("."));
        ["python3", "python"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .or_else(|| on_path("python3"))
            .expect("python3 for the fault proxy")
    }

    /// The environment kprov's S3 client (`kprov mirror` to `s3://`) needs for this moto.
    pub fn kprov_s3_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KPROV_S3_ENDPOINT", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            // distinctive, so the leak scan can search for it (moto accepts any secret)
            (
                "AWS_SECRET_ACCESS_KEY",
                "kprov-mirror-moto-secret-2b81".into(),
            ),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }
}
