//! Real etcd (Debian's `etcd-server`, 3.4) members on loopback with TLS and client-certificate
//! auth for clients and peers, their certificates signed by a CA the test hands in (kprov's
//! etcd CA from a real state store); plus `etcdctl` for what kprov does not do itself (snapshot
//! restore, reading keys back).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::peers;
use crate::ports::free_port;
use crate::process::ChildGuard;
use crate::wait::wait_until;

/// One member.
pub struct EtcdMember {
    /// `--name`.
    pub name: String,
    /// Client port on 127.0.0.1.
    pub client_port: u16,
    /// Peer port on 127.0.0.1.
    pub peer_port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
    guard: Option<ChildGuard>,
}

impl EtcdMember {
    /// `https://127.0.0.1:CLIENT`.
    pub fn client_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.client_port)
    }
    /// `https://127.0.0.1:PEER`.
    pub fn peer_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.peer_port)
    }
    /// Is its process running?
    pub fn running(&mut self) -> bool {
        self.guard.as_mut().is_some_and(|g| g.exited().is_none())
    }
}

/// An etcd cluster of members started by the test, stopped when dropped.
pub struct EtcdCluster {
    /// Members, in start order.
    pub members: Vec<EtcdMember>,
    /// Directory of data, certificates and logs.
    pub dir: PathBuf,
    /// The CA certificate (PEM file).
    pub ca: PathBuf,
    /// A client certificate and key for `etcdctl` (PEM files, signed by the CA).
    pub client: (PathBuf, PathBuf),
    /// Server/peer certificate and key every member uses (SAN 127.0.0.1, localhost).
    server: (PathBuf, PathBuf),
    token: String,
}

/// Sign a certificate for `cn` (SANs 127.0.0.1 and localhost) with the CA in PEM.
fn issue(ca_cert: &str, ca_key: &str, cn: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::from_pem(ca_key).expect("CA key PEM");
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert, key).expect("CA certificate PEM");
    let mut p =
        rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).expect("sans");
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let leaf = rcgen::KeyPair::generate().expect("key");
    let cert = p.signed_by(&leaf, &issuer).expect("sign");
    let (c, k) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, leaf.serialize_pem()).unwrap();
    (c, k)
}

impl EtcdCluster {
    /// Start `n` members (`m0`…) as one new cluster, certificates signed by the CA
    /// (`ca_cert`/`ca_key` PEM), and wait until every member reports healthy. `None` (after
    /// the install hint) when `etcd` is missing and `KPROV_SKIP_PEERS=1`.
    pub fn start(
        test: &str,
        dir: &Path,
        ca_cert: &str,
        ca_key: &str,
        n: usize,
    ) -> Option<EtcdCluster> {
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        Self::start_named(test, dir, ca_cert, ca_key, &names)
    }

    /// As [`EtcdCluster::start`], the members named `names` (kubeadm names each member after
    /// its control-plane node).
    pub fn start_named(
        test: &str,
        dir: &Path,
        ca_cert: &str,
        ca_key: &str,
        names: &[String],
    ) -> Option<EtcdCluster> {
        let n = names.len();
        peers::require(test, "etcd")?;
        peers::require(test, "etcdctl")?;
        std::fs::create_dir_all(dir).unwrap();
        let ca = dir.join("etcd-ca.pem");
        std::fs::write(&ca, ca_cert).unwrap();
        let server = issue(ca_cert, ca_key, "etcd-server", dir);
        let client = issue(ca_cert, ca_key, "etcdctl-client", dir);
        let mut c = EtcdCluster {
            members: Vec::new(),
            dir: dir.to_path_buf(),
            ca,
            client,
            server,
            token: format!("kprov-test-{}", std::process::id()),
        };
        for (i, name) in names.iter().enumerate() {
            c.members.push(EtcdMember {
                name: name.clone(),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.join(format!("m{i}")),
                guard: None,
            });
        }
        let initial = c.initial_cluster(&c.members.iter().collect::<Vec<_>>());
        for i in 0..n {
            c.launch(i, &initial, "new");
        }
        for i in 0..n {
            c.wait_healthy(i);
        }
        Some(c)
    }

    fn initial_cluster(&self, members: &[&EtcdMember]) -> String {
        members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Start member `i`'s process with `--initial-cluster INITIAL` in state `state`.
    fn launch(&mut self, i: usize, initial: &str, state: &str) {
        let (cert, key) = (&self.server.0, &self.server.1);
        let m = &self.members[i];
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(m.client_url())
            .arg("--advertise-client-urls")
            .arg(m.client_url())
            .arg("--listen-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-cluster")
            .arg(initial)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--cert-file")
            .arg(cert)
            .arg("--key-file")
            .arg(key)
            .arg("--trusted-ca-file")
            .arg(&self.ca)
            .arg("--client-cert-auth")
            .arg("--peer-cert-file")
            .arg(cert)
            .arg("--peer-key-file")
            .arg(key)
            .arg("--peer-trusted-ca-file")
            .arg(&self.ca)
            .arg("--peer-client-cert-auth")
            // a test cluster: short heartbeats so elections after a kill take ~1 s
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        let log = self.dir.join(format!("{}.log", m.name));
        let guard = ChildGuard::spawn(&format!("etcd {}", m.name), &mut cmd, &log);
        self.members[i].guard = Some(guard);
    }

    /// `etcdctl` against `endpoints` with the test's client certificate.
    pub fn etcdctl(&self, endpoints: &[String], args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoints.join(","))
            .arg("--cacert")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.client.0)
            .arg("--key")
            .arg(&self.client.1)
            .args(["--dial-timeout", "3s", "--command-timeout", "5s"])
            .args(args)
            .output()
            .expect("etcdctl runs")
    }

    /// Wait until member `i` answers `endpoint health` (30 s), else panic with its log.
    pub fn wait_healthy(&mut self, i: usize) {
        let url = self.members[i].client_url();
        let ok = wait_until(Duration::from_secs(30), || {
            self.etcdctl(std::slice::from_ref(&url), &["endpoint", "health"])
                .status
                .success()
        });
        if !ok {
            let tail = self.members[i]
                .guard
                .as_ref()
                .map(|g| g.log_tail())
                .unwrap_or_default();
            panic!(
                "etcd {} did not become healthy; log:\n{tail}",
                self.members[i].name
            );
        }
    }

    /// Every running member's client URL.
    pub fn endpoints(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &mut self.members {
            if m.running() {
                out.push(m.client_url());
            }
        }
        out
    }

    /// Stop member `i` (SIGKILL: a crashed control plane).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut g) = self.members[i].guard.take() {
            let _ = g.child.kill();
            let _ = g.child.wait();
        }
    }

    /// A new member `name` for a cluster that already added it (`MemberAdd` with
    /// [`EtcdCluster::next_peer_port`]'s URL): started with `--initial-cluster-state existing`
    /// and the current members plus itself. Returns its index.
    pub fn join(&mut self, name: &str, peer_port: u16) -> usize {
        self.members.push(EtcdMember {
            name: name.to_string(),
            client_port: free_port(),
            peer_port,
            data_dir: self.dir.join(name),
            guard: None,
        });
        let i = self.members.len() - 1;
        let others: Vec<&EtcdMember> = self.members.iter().collect();
        let initial = self.initial_cluster(&others);
        self.launch(i, &initial, "existing");
        self.wait_healthy(i);
        i
    }

    /// What `kubeadm join --control-plane` does for etcd: `MemberAdd` of a new member `name`
    /// (through the running members, with `etcdctl member add`), then start it with the
    /// initial cluster etcd answered — the members as they are now, removed ones left out.
    /// Returns its index once it is healthy.
    pub fn kubeadm_join(&mut self, name: &str) -> usize {
        let peer_port = free_port();
        let peer = format!("https://127.0.0.1:{peer_port}");
        let eps = self.endpoints();
        // as kubeadm does, retry while etcd refuses a reconfiguration ("unhealthy cluster":
        // within 5 s of a member starting, or while one is down)
        let mut out = self.etcdctl(
            &eps,
            &["member", "add", name, &format!("--peer-urls={peer}")],
        );
        for _ in 0..30 {
            if out.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            out = self.etcdctl(
                &eps,
                &["member", "add", name, &format!("--peer-urls={peer}")],
            );
        }
        assert!(out.status.success(), "etcdctl member add {name}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let initial = text
            .lines()
            .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
            .map(|l| l.trim_end_matches('"').to_string())
            .unwrap_or_else(|| panic!("no ETCD_INITIAL_CLUSTER in: {text}"));
        self.members.push(EtcdMember {
            name: name.to_string(),
            client_port: free_port(),
            peer_port,
            data_dir: self.dir.join(name),
            guard: None,
        });
        let i = self.members.len() - 1;
        self.launch(i, &initial, "existing");
        self.wait_healthy(i);
        i
    }

    /// Stop the member named `name`, if it runs (its machine was deleted).
    pub fn stop(&mut self, name: &str) {
        if let Some(i) = self.members.iter().position(|m| m.name == name) {
            self.kill(i);
        }
    }

    /// Names of the members `etcdctl member list` shows, sorted.
    pub fn member_names(&mut self) -> Vec<String> {
        let eps = self.endpoints();
        let out = self.etcdctl(&eps, &["member", "list", "-w", "json"]);
        assert!(out.status.success(), "etcdctl member list: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("member list JSON");
        let mut names: Vec<String> = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// A free port for a member to be added.
    pub fn next_peer_port(&self) -> u16 {
        free_port()
    }

    /// Start member `name` on a data directory something else restored (a node's bootstrap):
    /// its membership comes from the data, so the flags' initial cluster is ignored. Returns
    /// its index once it is healthy.
    pub fn start_restored(&mut self, name: &str, data_dir: &Path) -> usize {
        self.members.push(EtcdMember {
            name: name.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: data_dir.to_path_buf(),
            guard: None,
        });
        let i = self.members.len() - 1;
        let initial = self.initial_cluster(&[&self.members[i]]);
        self.launch(i, &initial, "new");
        self.wait_healthy(i);
        i
    }

    /// Restore `snapshot` with `etcdctl snapshot restore` into a new single-member cluster
    /// `name` and start it. Returns its index.
    pub fn restore(&mut self, name: &str, snapshot: &Path) -> usize {
        let peer_port = free_port();
        let data_dir = self.dir.join(name);
        let peer = format!("https://127.0.0.1:{peer_port}");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .args(["--name", name])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--initial-cluster")
            .arg(format!("{name}={peer}"))
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster-token")
            .arg(format!("{}-restored", self.token))
            .output()
            .expect("etcdctl snapshot restore runs");
        assert!(out.status.success(), "etcdctl snapshot restore: {out:?}");
        self.members.push(EtcdMember {
            name: name.to_string(),
            client_port: free_port(),
            peer_port,
            data_dir,
            guard: None,
        });
        let i = self.members.len() - 1;
        let initial = format!("{name}={peer}");
        self.launch(i, &initial, "new");
        self.wait_healthy(i);
        i
    }
}
