//! Harness for kprov's real-VM libvirt tests and benchmark (`tests/libvirt_vm.rs`,
//! `benches/libvirt.rs`): host peers and daemons, the cached test image, a loopback HTTP server
//! that is both the nodes' file repository (serving clearly named stand-ins for kubeadm, kubelet,
//! kubectl, crictl and the CNI plugins) and the phone-home listener, and a driver for the
//! `kprov` binary against a file state store.
//!
//! Network rule: everything listens on 127.0.0.1 only; the VMs use QEMU user networking with
//! `restrict=on` and reach nothing but `10.0.2.100:{8080,8081,5000}`, forwarded to these
//! listeners.
//! Include with `#[path = "vm/harness.rs"] mod harness;`.
#![allow(dead_code)]

#[path = "../support/audit.rs"]
pub mod audit;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Guest port of the phone-home / recorder listener.
pub const GUEST_CALLBACK_PORT: u16 = 8080;
/// Guest port of the file repository.
pub const GUEST_FILES_PORT: u16 = 8081;
/// Guest port of the registry mirror.
pub const GUEST_REGISTRY_PORT: u16 = 5000;
/// The env var (proposed bootstrap test hook) naming a `sha256sum`-format file whose sums
/// replace the pinned upstream SHA-256 of the files with those names.
pub const SHA256SUMS_ENV: &str = "KPROV_ASSET_SHA256SUMS";

/// Repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(name: &str) -> bool {
    if name.starts_with('/') {
        return Path::new(name).exists();
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(name).is_file())
}

/// Check the VM peers. `false` (after a loud SKIPPED line) only with `KPROV_SKIP_PEERS=1`;
/// otherwise a missing peer panics naming `bash tests/peers/install.sh`.
pub fn require_vm_peers(test: &str) -> bool {
    let need = [
        "/usr/sbin/libvirtd",
        "/usr/sbin/virtlogd",
        "virsh",
        "qemu-system-x86_64",
        "qemu-img",
        "mmdebstrap",
        "sfdisk",
        "mkfs.ext4",
        "/usr/lib/grub/i386-pc/boot.img",
        "nc",
    ];
    let missing: Vec<&str> = need.iter().copied().filter(|p| !on_path(p)).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "VM test peers missing: {}; install the test peers with `bash tests/peers/install.sh`",
        missing.join(", ")
    );
    if std::env::var("KPROV_SKIP_PEERS").is_ok_and(|v| v == "1") {
        eprintln!("\n!!!!! SKIPPED {test}: {msg} (KPROV_SKIP_PEERS=1) !!!!!\n");
        false
    } else {
        panic!("{test}: {msg} (or set KPROV_SKIP_PEERS=1 to skip peer tests)");
    }
}

fn run_script(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut c = Command::new("bash");
    c.arg(repo_root().join("tests/vm").join(script))
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    eprint!("{err}");
    assert!(out.status.success(), "tests/vm/{script} failed: {err}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// An exclusive lock on `/run/kprov-vm-test.lock`, held while a VM test or benchmark uses the
/// host's libvirtd (other processes — another engineer's `cargo test`, CI — wait for it, so one
/// run's teardown never stops libvirtd under another).
pub struct HostLock(std::fs::File);

/// Take the host lock (blocks while another run holds it).
pub fn host_lock() -> HostLock {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/kprov-vm-test.lock")
        .expect("open /run/kprov-vm-test.lock");
    if f.try_lock().is_err() {
        eprintln!("[vm] another VM test run holds /run/kprov-vm-test.lock; waiting");
        f.lock().expect("lock /run/kprov-vm-test.lock");
    }
    HostLock(f)
}

/// Start libvirtd/virtlogd if needed (`tests/vm/host-setup.sh`).
pub fn host_setup() {
    run_script("host-setup.sh", &[], &[]);
}

/// Undo what `host_setup` changed (stops only daemons it started).
pub fn host_teardown() {
    run_script("host-teardown.sh", &[], &[]);
}

/// Also remove the qemu-aarch64 binfmt registration `host-setup.sh --arm64` added.
pub fn host_teardown_arm64() {
    run_script("host-teardown.sh", &["--arm64"], &[]);
}

/// Build (or reuse the cached) test image of `arch`; returns the image directory.
pub fn image(arch: &str) -> PathBuf {
    let t = Instant::now();
    let out = run_script("build-image.sh", &[], &[("ARCH", arch)]);
    let dir = PathBuf::from(out.lines().last().expect("image dir").trim());
    eprintln!(
        "[vm] {arch} image ready in {:.1}s: {}",
        t.elapsed().as_secs_f64(),
        dir.display()
    );
    dir
}

/// One request the loopback server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Seconds since the server started.
    pub at: f64,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Body (JSON for callbacks).
    pub body: String,
}

/// A loopback HTTP/1.0-style server: GET serves `files` by path suffix, POST records the body.
pub struct Http {
    /// Its port on 127.0.0.1.
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    start: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Http {
    /// Serve `files` (URL path suffix → bytes) on a free 127.0.0.1 port.
    pub fn start(files: BTreeMap<String, Vec<u8>>) -> Http {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let files = Arc::new(Mutex::new(files));
        let (s2, st2, f2) = (seen.clone(), stop.clone(), files.clone());
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            // bounded: stops when the Http is dropped
            while !st2.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (s3, f3) = (s2.clone(), f2.clone());
                        std::thread::spawn(move || {
                            let _ = handle(s, &s3, &f3, start);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Http {
            port,
            seen,
            files,
            start,
            stop,
        }
    }

    /// Replace what GET serves.
    pub fn set_files(&self, files: BTreeMap<String, Vec<u8>>) {
        *self.files.lock().unwrap() = files;
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Seconds since the server started.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn handle(
    s: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    files: &Mutex<BTreeMap<String, Vec<u8>>>,
    start: Instant,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let mut w = s;
    let resp = |w: &mut TcpStream, code: &str, data: &[u8]| -> std::io::Result<()> {
        write!(
            w,
            "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            data.len()
        )?;
        w.write_all(data)?;
        w.flush()
    };
    let rec = Seen {
        at: start.elapsed().as_secs_f64(),
        method: method.clone(),
        path: path.clone(),
        body: String::from_utf8_lossy(&body).to_string(),
    };
    seen.lock().unwrap().push(rec);
    if method == "GET" {
        let data = files
            .lock()
            .unwrap()
            .iter()
            .find(|(k, _)| path.ends_with(k.as_str()))
            .map(|(_, d)| d.clone());
        match data {
            Some(data) => resp(&mut w, "200 OK", &data),
            None => resp(&mut w, "404 Not Found", b"not found\n"),
        }
    } else {
        resp(&mut w, "200 OK", b"{}")
    }
}

/// A stand-in for a Kubernetes binary: a python3 script (the image has python3 through
/// cloud-init) that POSTs its name, arguments and — for kubeadm — its `--config` file and the
/// node's prepared state (swap, modules, sysctls, containerd mirror config, registry reachable)
/// to the recorder, then exits 0. kubeadm also pulls, through containerd and the rendered
/// `hosts.toml`, the images kubelet/kubeadm would (pause; on init kube-proxy and the add-on
/// manifests' images) and reports the pulls and the guest's egress log. Otherwise it never
/// changes the node.
pub fn stand_in(tool: &str) -> Vec<u8> {
    format!(
        r##"#!/usr/bin/python3
# KPROV TEST STAND-IN for `{tool}` (tests/vm/harness.rs): NOT the real {tool}. It records its
# arguments and the node's state for kprov's libvirt VM test and changes nothing.
import glob, json, os, re, socket, subprocess, sys, urllib.request
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=20).stdout
    except Exception as e:
        return "error: %s" % e
def read(p):
    try:
        return open(p).read()
    except Exception:
        return None
args = sys.argv[1:]
rec = {{"tool": "{tool}", "args": args, "hostname": socket.gethostname()}}
if "{tool}" == "kubeadm" and args[:1] in (["init"], ["join"]):
    cfg = args[args.index("--config") + 1] if "--config" in args else None
    rec["config"] = read(cfg) if cfg else None
    rec["swaps"] = sh("tail -n +2 /proc/swaps | wc -l").strip()
    rec["modules"] = sh("cut -d' ' -f1 /proc/modules | grep -E '^(overlay|br_netfilter)$' | sort | tr '\\n' ' '").strip()
    rec["sysctls"] = {{k: sh("sysctl -n " + k).strip() for k in ["net.bridge.bridge-nf-call-iptables", "net.ipv4.ip_forward"]}}
    rec["hosts_toml"] = {{p: read(p) for p in glob.glob("/etc/containerd/certs.d/*/hosts.toml")}}
    rec["containerd_active"] = sh("systemctl is-active containerd").strip()
    rec["binaries"] = sh("sha256sum /usr/local/bin/kubeadm /usr/local/bin/kubelet /usr/local/bin/kubectl /usr/local/bin/crictl")
    rec["registry_v2"] = sh("curl -s -o /dev/null -w '%{{http_code}}' -m 10 http://10.0.2.100:{reg}/v2/")
    # Pull what kubelet and kubeadm would pull on this node, through containerd and the
    # rendered hosts.toml: the sandbox (pause) image from containerd's config; on the control
    # plane also kube-proxy (kubeadm config) and every image of the rendered add-on manifests.
    refs = []
    m = re.search(r'^\s*sandbox(?:_image)?\s*=\s*"([^"]+)"', read("/etc/containerd/config.toml") or "", re.M)
    if m:
        refs.append(m.group(1))
    if args[0] == "init" and rec["config"]:
        repo = re.search(r'^imageRepository:\s*"?([^"\s]+)"?', rec["config"], re.M)
        ver = re.search(r'^kubernetesVersion:\s*"?([^"\s]+)"?', rec["config"], re.M)
        if repo and ver:
            refs.append("%s/kube-proxy:%s" % (repo.group(1), ver.group(1)))
        for f in sorted(glob.glob("/etc/kprov/manifests/*.yaml")):
            refs += re.findall(r'^\s*-?\s*image:\s*"?([^"\s]+)"?', read(f) or "", re.M)
    rec["pulls"] = []
    for ref in sorted(set(refs)):
        try:
            p = subprocess.run(["ctr", "-n", "k8s.io", "images", "pull", "--hosts-dir", "/etc/containerd/certs.d", ref], capture_output=True, text=True, timeout=600)
            rc, out = p.returncode, (p.stdout + p.stderr)[-600:]
        except Exception as e:
            rc, out = -1, "error: %s" % e
        digest = ""
        for line in sh("ctr -n k8s.io images ls").splitlines():
            cols = line.split()
            if cols and cols[0] == ref and len(cols) > 2:
                digest = cols[2]
        rec["pulls"].append({{"ref": ref, "rc": rc, "digest": digest, "output": out}})
    # Every new outgoing connection since boot (tests/vm/kprov-egress-audit.service).
    rec["egress"] = [l for l in sh("dmesg").splitlines() if "kprov-egress:" in l][:500]
    rec["egress_audit"] = sh("iptables -w -S OUTPUT")
    if args[0] == "init":
        os.makedirs("/etc/kubernetes", exist_ok=True)
        open("/etc/kubernetes/admin.conf", "w").write("# kprov test stand-in: no real cluster\n")
try:
    urllib.request.urlopen(urllib.request.Request("http://10.0.2.100:{cb}/standin/{tool}", data=json.dumps(rec).encode(), headers={{"Content-Type": "application/json"}}), timeout=20)
except Exception as e:
    print("stand-in: report failed: %s" % e, file=sys.stderr)
sys.exit(0)
"##,
        reg = GUEST_REGISTRY_PORT,
        cb = GUEST_CALLBACK_PORT,
    )
    .into_bytes()
}

fn tgz(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// The file repository content (URL path suffix → bytes) for `arch`: stand-ins at the names
/// kprov's bootstrap downloads (kubeadm, kubelet, kubectl, the crictl and CNI tarballs).
pub fn file_repository(arch: &str) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for t in ["kubeadm", "kubelet", "kubectl"] {
        files.insert(format!("/bin/linux/{arch}/{t}"), stand_in(t));
    }
    files.insert(
        format!("-linux-{arch}.tar.gz"),
        tgz(&[("crictl", stand_in("crictl"))]),
    );
    files.insert(
        ".tgz".to_string(),
        tgz(&[
            ("bridge", stand_in("bridge")),
            ("loopback", stand_in("loopback")),
        ]),
    );
    files
}

/// The files a node's user-data downloads: (URL, pinned SHA-256), from its `kprov_fetch` lines.
pub fn fetches(user_data: &str) -> Vec<(String, String)> {
    user_data
        .lines()
        .filter_map(|l| l.trim().strip_prefix("kprov_fetch \""))
        .filter_map(|l| {
            let parts: Vec<&str> = l.split('"').collect();
            // URL" "DEST" "SHA" || return 1
            Some((parts.first()?.to_string(), parts.get(4)?.to_string()))
        })
        .collect()
}

/// `sha256sum`-format lines giving the stand-ins' SHA-256 under the file names in `fetches`.
pub fn sha256sums(fetches: &[(String, String)], files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut out = String::new();
    for (url, _) in fetches {
        if let Some((_, data)) = files.iter().find(|(k, _)| url.ends_with(k.as_str())) {
            let name = url.rsplit('/').next().unwrap_or(url);
            out.push_str(&format!("{}  {name}\n", hex::encode(Sha256::digest(data))));
        }
    }
    out
}

/// A `kprov` CLI driver with a file state store.
pub struct Kprov {
    /// State store directory.
    pub state: tempfile::TempDir,
    /// Extra environment for every run.
    pub env: Vec<(String, String)>,
}

impl Kprov {
    /// New store.
    pub fn new() -> Kprov {
        Kprov {
            state: tempfile::tempdir().unwrap(),
            env: vec![],
        }
    }

    /// The command.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = audit::kprov_command();
        c.args(args)
            .env(
                "KPROV_STATE_STORE",
                format!("file://{}", self.state.path().display()),
            )
            .env("NO_COLOR", "1")
            .env_remove("KPROV_CLUSTER_NAME")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Run, returning the output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Run and require success; returns stdout+stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "kprov {args:?} failed:\n{text}");
        text
    }

    /// Create cluster `name` on libvirt (qemu:///system, TCG, restricted user networking with
    /// forwards to the given loopback ports) with 1 control plane of `cp_size` and `nodes`
    /// workers of `node_size` (`CPU:MEMORY`), booting the image directory `image`.
    #[allow(clippy::too_many_arguments)]
    pub fn create_cluster(
        &self,
        name: &str,
        arch: &str,
        nodes: u32,
        cp_size: &str,
        node_size: &str,
        image: &Path,
        callback: u16,
        files: u16,
        registry: u16,
    ) {
        let n = nodes.to_string();
        self.ok(&[
            "create",
            "cluster",
            name,
            "--provider",
            "libvirt",
            "--arch",
            arch,
            "--control-plane-count",
            "1",
            "--node-count",
            &n,
            "--control-plane-size",
            cp_size,
            "--node-size",
            node_size,
            "--registry-mirror",
            &format!("10.0.2.100:{GUEST_REGISTRY_PORT}"),
            "--file-repository",
            &format!("http://10.0.2.100:{GUEST_FILES_PORT}"),
        ]);
        // libvirt settings `create cluster` has no flags for: edit the stored spec
        let path = self.state.path().join(name).join("config.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let spec = doc.get_mut("spec").expect("spec");
        let lv: serde_yaml::Value = serde_yaml::from_str(&format!(
            "uri: qemu:///system\ndomainType: qemu\nnetwork:\n  user:\n    forwards: {{{GUEST_CALLBACK_PORT}: {callback}, {GUEST_FILES_PORT}: {files}, {GUEST_REGISTRY_PORT}: {registry}}}\nimages:\n  {arch}: {}\n",
            image.display()
        ))
        .unwrap();
        spec["provider"]["libvirt"] = lv;
        spec["assets"]["insecure"] = serde_yaml::Value::Bool(true);
        std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    }
}

/// `virsh -c qemu:///system ARGS` stdout (empty on failure).
pub fn virsh(args: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("virsh -q -c qemu:///system {args}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Domain names starting with `prefix`.
pub fn domains(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = virsh("list --all --name")
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(prefix))
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// Everything libvirt still has for cluster `c`: domains, pools, volumes (in any active pool)
/// and networks named after it.
pub fn leftovers(c: &str) -> Vec<String> {
    let mut left: Vec<String> = domains(&format!("{c}-"))
        .into_iter()
        .map(|d| format!("domain {d}"))
        .collect();
    for p in virsh("pool-list --all --name")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        if p == format!("kprov.{c}") {
            left.push(format!("pool {p}"));
        }
        for v in virsh(&format!("vol-list {p}")).lines() {
            if let Some(name) = v.split_whitespace().next() {
                if name.starts_with(&format!("kprov.{c}.")) {
                    left.push(format!("volume {p}/{name}"));
                }
            }
        }
    }
    for n in virsh("net-list --all --name").lines().map(str::trim) {
        if n == format!("kprov.{c}") {
            left.push(format!("network {n}"));
        }
    }
    left
}

/// Destroy + undefine (with NVRAM) every domain starting with `prefix` (cleanup of a failed run).
pub fn force_cleanup(prefix: &str) {
    for d in domains(prefix) {
        virsh(&format!("destroy {d}"));
        virsh(&format!("undefine {d} --nvram"));
    }
}

/// Phase reports (`node`, `phase`, `status`, seconds) seen by the recorder.
pub fn phases(h: &Http) -> Vec<(String, String, String, f64)> {
    h.seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.ends_with("/kprov/phase"))
        .filter_map(|s| {
            let v: serde_json::Value = serde_json::from_str(&s.body).ok()?;
            Some((
                v["node"].as_str()?.to_string(),
                v["phase"].as_str()?.to_string(),
                v["status"].as_str()?.to_string(),
                s.at,
            ))
        })
        .collect()
}

/// Stand-in reports (`tool`, JSON).
pub fn stand_in_reports(h: &Http) -> Vec<(String, serde_json::Value)> {
    h.seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.contains("/standin/"))
        .filter_map(|s| {
            let v: serde_json::Value = serde_json::from_str(&s.body).ok()?;
            Some((v["tool"].as_str()?.to_string(), v))
        })
        .collect()
}

/// Wait (polling every second, printing progress) until `done` holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    let mut last = 0;
    while t.elapsed() < timeout {
        if done() {
            return true;
        }
        let s = t.elapsed().as_secs();
        if s / 30 != last {
            last = s / 30;
            eprintln!("[vm] waiting for {what}: {s}s");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    done()
}

/// A blank qcow2 of `size` (`16M`, `256M`) at `dir/base.qcow2`, for tests that check only
/// kprov's libvirt objects (nothing boots from it). `preallocate`: write every byte (a file as
/// big as the image, so its upload takes time), else a few hundred KiB.
pub fn blank_base_image(dir: &Path, size: &str, preallocate: bool) -> PathBuf {
    let path = dir.join("base.qcow2");
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", "qcow2"]);
    if preallocate {
        c.args(["-o", "preallocation=full"]);
    }
    let st = c.arg(&path).arg(size).status().expect("qemu-img");
    assert!(st.success(), "qemu-img create {size} failed");
    path
}

/// The PID in libvirtd's pidfile (`/run/libvirtd.pid`, written by `libvirtd -d`).
pub fn libvirtd_pid() -> Option<i32> {
    std::fs::read_to_string("/run/libvirtd.pid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Send `sig` (`STOP`, `CONT`, `KILL`, `0`) to `pid`; whether it was delivered.
pub fn signal(pid: i32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether libvirtd answers on qemu:///system (one `virsh version`, at most 5 s).
pub fn libvirtd_answers() -> bool {
    Command::new("timeout")
        .args(["5", "virsh", "-q", "-c", "qemu:///system", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Start libvirtd (`libvirtd -d`, as `tests/vm/host-setup.sh` does) unless its pidfile's
/// process runs, resume it if it is stopped, and wait (≤ 60 s) until it answers.
pub fn try_ensure_libvirtd() -> Result<(), String> {
    match libvirtd_pid() {
        Some(pid) if signal(pid, "0") => {
            signal(pid, "CONT");
        }
        _ => {
            let st = Command::new("/usr/sbin/libvirtd")
                .arg("-d")
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("/usr/sbin/libvirtd -d: {e}"))?;
            if !st.success() {
                return Err(format!("libvirtd -d failed: {st}"));
            }
        }
    }
    if wait_for(
        "libvirtd to answer",
        Duration::from_secs(60),
        libvirtd_answers,
    ) {
        Ok(())
    } else {
        Err("libvirtd does not answer on qemu:///system".into())
    }
}

/// [`try_ensure_libvirtd`], panicking on failure.
pub fn ensure_libvirtd() {
    if let Err(e) = try_ensure_libvirtd() {
        panic!("{e}");
    }
}

/// On drop (also after a failed assertion): libvirtd resumed or started again
/// ([`try_ensure_libvirtd`]). For tests that stop or kill it.
pub struct LibvirtdRestore;

impl Drop for LibvirtdRestore {
    fn drop(&mut self) {
        if let Err(e) = try_ensure_libvirtd() {
            eprintln!("[vm] could not restore libvirtd ({e}): start it with `libvirtd -d`");
        }
    }
}
