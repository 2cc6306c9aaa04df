//! The registry token server (`tests/peers/tokenserver.py`) over HTTPS on a free loopback port:
//! users, an ACL, tokens signed by a [`TestCa`] certificate, every token request logged. The
//! tokens it issues are recorded for the suite's secret-leak scan when auditing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kprov_cmd::issued_secrets_file;
use crate::peers::{peer_script, require_python};
use crate::ports::free_port;
use crate::process::ChildGuard;
use crate::registry::TokenAuth;
use crate::test_ca::TestCa;

/// A running token server.
pub struct TokenServer {
    /// `https://127.0.0.1:PORT/token`.
    pub realm: String,
    /// JSON lines, one per token request (see the script).
    pub log: PathBuf,
    /// The issuer name the registries must expect.
    pub issuer: String,
    _guard: ChildGuard,
}

impl TokenServer {
    /// Start it: tokens signed by a certificate of `ca`, HTTPS with a certificate of `ca`,
    /// `users` (name → password), `acl` (JSON, see the script), files in `dir`.
    pub fn start(
        test: &str,
        ca: &TestCa,
        users: &[(&str, &str)],
        acl: &str,
        dir: &Path,
        expires_in: u32,
    ) -> Option<TokenServer> {
        let py = require_python(test)?;
        let sign = ca.issue("token-signer", &["kprov-token-signer"]);
        let tls = ca.issue("token-server", &["127.0.0.1"]);
        let users_file = dir.join("users.json");
        let map: serde_json::Map<String, serde_json::Value> = users
            .iter()
            .map(|(u, p)| (u.to_string(), serde_json::Value::from(*p)))
            .collect();
        std::fs::write(&users_file, serde_json::Value::Object(map).to_string()).unwrap();
        let acl_file = dir.join("acl.json");
        std::fs::write(&acl_file, acl).unwrap();
        let port = free_port();
        let log = dir.join("tokens.jsonl");
        let out = dir.join("tokenserver.out");
        let issuer = "kprov-test-token-issuer".to_string();
        let mut cmd = Command::new(py);
        if let Some(f) = issued_secrets_file("tokenserver") {
            cmd.arg(peer_script("tokenserver.py"))
                .arg("--issued")
                .arg(f);
        } else {
            cmd.arg(peer_script("tokenserver.py"));
        }
        let mut g = ChildGuard::spawn(
            "tokenserver.py",
            cmd.args(["--listen", &port.to_string(), "--issuer", &issuer])
                .arg("--sign-cert")
                .arg(&sign.cert)
                .arg("--sign-key")
                .arg(&sign.key)
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key)
                .arg("--users")
                .arg(&users_file)
                .arg("--acl")
                .arg(&acl_file)
                .arg("--log")
                .arg(&log)
                .args(["--expires-in", &expires_in.to_string()]),
            &out,
        );
        g.wait_listening(port, &out);
        Some(TokenServer {
            realm: format!("https://127.0.0.1:{port}/token"),
            log,
            issuer,
            _guard: g,
        })
    }

    /// The registry's `auth.token` block for `service`.
    pub fn auth(&self, service: &str, ca: &TestCa) -> TokenAuth {
        TokenAuth {
            realm: self.realm.clone(),
            service: service.into(),
            issuer: self.issuer.clone(),
            rootcertbundle: ca.ca_pem.clone(),
        }
    }

    /// Every logged token request.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("token log line"))
            .collect()
    }
}
