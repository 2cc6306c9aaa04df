//! `tests/peers/faultproxy.py` on a free loopback port in front of any HTTP upstream (moto, a
//! registry): rules make it delay, drop, cut or fail requests; it counts what it proxied. Stopped
//! by PID when dropped, and can be stopped and restarted on the same port.

use std::path::PathBuf;
use std::process::Command;

use crate::moto::Moto;
use crate::peers::{peer_script, require_python};
use crate::ports::free_port;
use crate::process::ChildGuard;
use crate::raw_http;

/// The fault proxy.
pub struct FaultProxy {
    /// Its port on 127.0.0.1 (kept across restarts).
    pub port: u16,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    upstream: String,
    python: PathBuf,
    guard: Option<ChildGuard>,
    dir: tempfile::TempDir,
}

impl FaultProxy {
    /// Start a proxy on a free port forwarding to `moto` (run by the python next to moto).
    pub fn start(moto: &Moto) -> FaultProxy {
        FaultProxy::spawn(moto.python(), moto.endpoint())
    }

    /// Start one on a free port forwarding to `http://upstream` (`host:port`), run by the peers
    /// venv's python; `None` when that is missing and `KPROV_SKIP_PEERS=1`.
    pub fn start_for(test: &str, upstream: &str) -> Option<FaultProxy> {
        let py = require_python(test)?;
        Some(FaultProxy::spawn(py, format!("http://{upstream}")))
    }

    fn spawn(python: PathBuf, upstream: String) -> FaultProxy {
        let port = free_port();
        let mut p = FaultProxy {
            port,
            addr: format!("127.0.0.1:{port}"),
            upstream,
            python,
            guard: None,
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
        self.guard = None;
    }

    /// (Re)start the proxy on the same port (rules start empty).
    pub fn restart(&mut self) {
        self.stop();
        let mut guard = ChildGuard::spawn(
            "faultproxy.py",
            Command::new(&self.python)
                .arg(peer_script("faultproxy.py"))
                .args([
                    "--listen",
                    &self.port.to_string(),
                    "--upstream",
                    &self.upstream,
                ]),
            &self.dir.path().join("proxy.log"),
        );
        guard.wait_ready(self.port, "/__fault__/rules");
        self.guard = Some(guard);
    }

    /// Replace the rules (JSON list, see faultproxy.py).
    pub fn set_rules(&self, json: &str) {
        let (status, body) =
            raw_http::request(self.port, "POST", "/__fault__/rules", json).unwrap();
        assert_eq!(status, 200, "setting proxy rules failed: {body}");
    }

    /// Clear rules, hits and counts.
    pub fn clear(&self) {
        let (status, body) =
            raw_http::request(self.port, "DELETE", "/__fault__/rules", "").unwrap();
        assert_eq!(status, 200, "clearing proxy rules failed: {body}");
    }

    /// The proxy's state as it answers it: rules (with `fired`), hits, counts, total.
    pub fn state_text(&self) -> String {
        raw_http::request(self.port, "GET", "/__fault__/rules", "")
            .unwrap()
            .1
    }

    /// [`FaultProxy::state_text`], parsed.
    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&self.state_text()).unwrap()
    }

    /// Requests proxied since the last clear.
    pub fn total(&self) -> u64 {
        self.state()["total"].as_u64().unwrap_or(0)
    }

    /// How many times rule `i` fired.
    pub fn fired(&self, i: usize) -> u64 {
        self.state()["rules"][i]["fired"].as_u64().unwrap_or(0)
    }
}
