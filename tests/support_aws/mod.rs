//! Test peers for the AWS adapter's tests: a real moto server (EC2 + ELBv2 on one port) and the
//! fault proxy (`tests/peers/faultproxy.py`) in front of it, each on a free loopback port
//! and killed by PID (through `Child`) when dropped; plus SDK helpers that read the cloud
//! directly, never through kprov's own view.
//!
//! Shared by `tests/aws_e2e.rs`, `benches/aws.rs` and `providers/tests/aws_*.rs` (via `#[path]`).
//! moto is found through `KPROV_MOTO_SERVER`, then `$KPROV_PEERS/venv/bin/moto_server`, then
//! `/opt/kprov-peers/venv/bin/moto_server`, then `moto_server` on `PATH`. A missing moto fails
//! the test with the install step, unless `KPROV_SKIP_PEERS=1`, in which case the test prints a
//! loud SKIPPED line and passes.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kprov_providers::aws::aws_sdk_ec2 as ec2;
use kprov_providers::aws::aws_sdk_elasticloadbalancingv2 as elb;

/// Where tests/peers/install.sh puts moto.
pub const PEERS_VENV_MOTO: &str = "/opt/kprov-peers/venv/bin/moto_server";
/// Dummy credentials moto accepts.
pub const KEY_ID: &str = "testing";
/// Dummy secret (not a secret: moto accepts anything).
pub const SECRET: &str = "kprov-moto-test-secret-7f3a";
/// A valid Ed25519 public key (moto's ImportKeyPair parses the material).
pub const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIhacE+s/jDwZ7a8HdkGsMogSfrYwb3N0j+EyAq9eiuI kprov-test";

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
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

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
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Only the process we started, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
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

/// A running moto server with kprov's recommended validation switches.
pub struct Moto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    binary: PathBuf,
    // Declared before `dir` so the process dies before its log directory is removed.
    peer: Peer,
    dir: tempfile::TempDir,
}

impl Moto {
    /// Start moto on a free port, or `None` when moto is missing and `KPROV_SKIP_PEERS=1`.
    pub fn start(what: &str) -> Option<Moto> {
        let Some(binary) = moto_binary() else {
            if std::env::var("KPROV_SKIP_PEERS").as_deref() == Ok("1") {
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
        let mut peer = Peer::spawn(
            "moto_server",
            Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "1")
                .env("MOTO_ENABLE_AMI_VALIDATION", "1")
                .env("MOTO_ENABLE_KEYPAIR_VALIDATION", "1"),
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

    /// Wipe every service's state (moto's own reset; default VPC and AMIs come back).
    pub fn reset(&self) {
        let (status, body) = http(self.port, "POST", "/moto-api/reset", "").unwrap();
        assert_eq!(status, 200, "moto reset failed: {body}");
    }

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

/// `tests/peers/faultproxy.py`, found from whichever crate's tests are running.
fn proxy_script() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let p = dir.join("tests/peers/faultproxy.py");
        if p.is_file() {
            return p;
        }
        assert!(
            dir.pop(),
            "tests/peers/faultproxy.py not found above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    }
}

/// The fault proxy in front of moto.
pub struct FaultProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    _peer: Peer,
    _dir: tempfile::TempDir,
}

impl FaultProxy {
    /// Start a proxy on a free port forwarding to `moto`.
    pub fn start(moto: &Moto) -> FaultProxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut peer = Peer::spawn(
            "faultproxy.py",
            Command::new(moto.python()).arg(proxy_script()).args([
                "--listen",
                &port.to_string(),
                "--upstream",
                &moto.endpoint(),
            ]),
            dir.path().join("proxy.log"),
        );
        peer.wait_ready(port, "/__fault__/rules");
        FaultProxy {
            port,
            _peer: peer,
            _dir: dir,
        }
    }

    /// Endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Replace the rules (JSON list, see faultproxy.py).
    pub fn set_rules(&self, json: &str) {
        let (status, body) = http(self.port, "POST", "/__fault__/rules", json).unwrap();
        assert_eq!(status, 200, "setting proxy rules failed: {body}");
    }

    /// Clear rules, hits and counts.
    pub fn clear(&self) {
        let (status, body) = http(self.port, "DELETE", "/__fault__/rules", "").unwrap();
        assert_eq!(status, 200, "clearing proxy rules failed: {body}");
    }

    /// The proxy's state: rules (with `fired`), hits, counts, total.
    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&http(self.port, "GET", "/__fault__/rules", "").unwrap().1).unwrap()
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

/// SDK clients straight at `endpoint` (never a real AWS endpoint), with dummy credentials.
pub fn clients(endpoint: &str) -> (ec2::Client, elb::Client) {
    let creds = ec2::config::Credentials::new(KEY_ID, SECRET, None, None, "test");
    let e = ec2::Config::builder()
        .behavior_version(ec2::config::BehaviorVersion::latest())
        .region(ec2::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds.clone())
        .build();
    let l = elb::Config::builder()
        .behavior_version(elb::config::BehaviorVersion::latest())
        .region(elb::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .build();
    (ec2::Client::from_conf(e), elb::Client::from_conf(l))
}

fn by_cluster(cluster: &str) -> ec2::types::Filter {
    ec2::types::Filter::builder()
        .name("tag:kprov.io/cluster")
        .values(cluster)
        .build()
}

/// One live instance as read from EC2: (EC2 id, `kprov.io/instance-id` tag, instance type,
/// architecture, state).
pub type LiveInstance = (String, String, String, String, String);

/// Live (not terminated / shutting-down) instances tagged with `cluster`, by instance-id tag.
pub async fn live_instances(c: &ec2::Client, cluster: &str) -> Vec<LiveInstance> {
    let out = c
        .describe_instances()
        .filters(by_cluster(cluster))
        .filters(
            ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut v: Vec<_> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            let t = |k: &str| {
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .unwrap_or_default()
                    .to_string()
            };
            (
                i.instance_id().unwrap_or_default().to_string(),
                t("kprov.io/instance-id"),
                i.instance_type()
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_default(),
                i.architecture()
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_default(),
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    v
}

/// Every resource tagged with `cluster` that still exists, read with describe-* calls:
/// `kind id` strings (empty = nothing left).
pub async fn tagged_resources(endpoint: &str, cluster: &str) -> Vec<String> {
    let (c, l) = clients(endpoint);
    let mut left = Vec::new();
    for (id, _, _, _, _) in live_instances(&c, cluster).await {
        left.push(format!("instance {id}"));
    }
    let shutting = c
        .describe_instances()
        .filters(by_cluster(cluster))
        .filters(
            ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("shutting-down")
                .build(),
        )
        .send()
        .await
        .unwrap();
    for i in shutting.reservations().iter().flat_map(|r| r.instances()) {
        left.push(format!(
            "instance(shutting-down) {}",
            i.instance_id().unwrap_or_default()
        ));
    }
    for v in c
        .describe_volumes()
        .filters(by_cluster(cluster))
        .send()
        .await
        .unwrap()
        .volumes()
    {
        left.push(format!(
            "volume {} {:?}",
            v.volume_id().unwrap_or_default(),
            v.state()
        ));
    }
    for g in c
        .describe_security_groups()
        .filters(by_cluster(cluster))
        .send()
        .await
        .unwrap()
        .security_groups()
    {
        left.push(format!(
            "security-group {}",
            g.group_id().unwrap_or_default()
        ));
    }
    for s in c
        .describe_subnets()
        .filters(by_cluster(cluster))
        .send()
        .await
        .unwrap()
        .subnets()
    {
        left.push(format!("subnet {}", s.subnet_id().unwrap_or_default()));
    }
    for r in c
        .describe_route_tables()
        .filters(by_cluster(cluster))
        .send()
        .await
        .unwrap()
        .route_tables()
    {
        left.push(format!(
            "route-table {}",
            r.route_table_id().unwrap_or_default()
        ));
    }
    for g in c
        .describe_internet_gateways()
        .filters(by_cluster(cluster))
        .send()
        .await
        .unwrap()
        .internet_gateways()
    {
        left.push(format!(
            "igw {}",
            g.internet_gateway_id().unwrap_or_default()
        ));
    }
    for v in c
        .describe_vpcs()
        .filters(by_cluster(cluster))
        .send()
        .await
        .unwrap()
        .vpcs()
    {
        left.push(format!("vpc {}", v.vpc_id().unwrap_or_default()));
    }
    for k in c.describe_key_pairs().send().await.unwrap().key_pairs() {
        let name = k.key_name().unwrap_or_default();
        let tagged = k
            .tags()
            .iter()
            .any(|t| t.key() == Some("kprov.io/cluster") && t.value() == Some(cluster));
        if tagged || name == format!("kprov-{cluster}") {
            left.push(format!("key-pair {name}"));
        }
    }
    let lbs = l.describe_load_balancers().send().await.unwrap();
    let tgs = l.describe_target_groups().send().await.unwrap();
    let arns: Vec<String> = lbs
        .load_balancers()
        .iter()
        .filter_map(|x| x.load_balancer_arn())
        .chain(
            tgs.target_groups()
                .iter()
                .filter_map(|x| x.target_group_arn()),
        )
        .map(str::to_string)
        .collect();
    for chunk in arns.chunks(20) {
        let d = l
            .describe_tags()
            .set_resource_arns(Some(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        for td in d.tag_descriptions() {
            if td
                .tags()
                .iter()
                .any(|t| t.key() == Some("kprov.io/cluster") && t.value() == Some(cluster))
            {
                left.push(format!("elb {}", td.resource_arn().unwrap_or_default()));
            }
        }
    }
    left
}

/// `instance-id` tags that appear on more than one live instance.
pub fn duplicates(live: &[LiveInstance]) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for i in live {
        *seen.entry(i.1.as_str()).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, n)| format!("{k} x{n}"))
        .collect()
}
