//! What the VMs see: the guest ports forwarded to the host's loopback listeners, clearly named
//! stand-ins for the Kubernetes binaries (python3 scripts that report to the recorder), the file
//! repository serving them, and the reports read back from the recorder.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::http_server::Server;

/// Guest port of the phone-home / recorder listener.
pub const GUEST_CALLBACK_PORT: u16 = 8080;
/// Guest port of the file repository.
pub const GUEST_FILES_PORT: u16 = 8081;
/// Guest port of the registry mirror.
pub const GUEST_REGISTRY_PORT: u16 = 5000;
/// The env var (proposed bootstrap test hook) naming a `sha256sum`-format file whose sums
/// replace the pinned upstream SHA-256 of the files with those names.
pub const SHA256SUMS_ENV: &str = "KPROV_ASSET_SHA256SUMS";

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
# KPROV TEST STAND-IN for `{tool}` (testkit/src/vm/stand_ins.rs): NOT the real {tool}. It records its
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
    rec["binaries"] = sh("sha256sum /usr/local/bin/kubeadm /usr/local/bin/kubelet /usr/local/bin/kubectl /usr/local/bin/crictl /usr/local/bin/containerd /usr/local/bin/ctr /usr/local/bin/containerd-shim-runc-v2 /usr/local/sbin/runc")
    rec["commands"] = {{c: sh("command -v " + c).strip() for c in ["containerd", "runc", "conntrack", "socat"]}}
    rec["containerd_exec"] = sh("systemctl show -p ExecStart --value containerd")
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

/// A gzipped tar of `entries` (name → executable content).
pub(crate) fn tgz(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
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
/// kprov's bootstrap downloads (kubeadm, kubelet, kubectl, the crictl and CNI tarballs, the
/// containerd tarball and runc).
pub fn file_repository(arch: &str) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for t in ["kubeadm", "kubelet", "kubectl"] {
        files.insert(format!("/bin/linux/{arch}/{t}"), stand_in(t));
    }
    files.insert(
        format!("-linux-{arch}.tar.gz"),
        tgz(&[("crictl", stand_in("crictl"))]),
    );
    // The container runtime: stand-ins here; the VM tests put the real one in its place
    // (`use_real_runtime`), since their bare image has none and kubeadm's stand-in pulls
    // through it.
    files.insert(
        format!("containerd-static-*-linux-{arch}.tar.gz"),
        tgz(&[
            ("bin/containerd", stand_in("containerd")),
            ("bin/ctr", stand_in("ctr")),
            (
                "bin/containerd-shim-runc-v2",
                stand_in("containerd-shim-runc-v2"),
            ),
        ]),
    );
    files.insert(format!("/runc.{arch}"), stand_in("runc"));
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
        if let Some(data) = crate::http_server::suffix_lookup(files, url) {
            let name = url.rsplit('/').next().unwrap_or(url);
            out.push_str(&format!("{}  {name}\n", hex::encode(Sha256::digest(data))));
        }
    }
    out
}

/// Phase reports (`node`, `phase`, `status`, seconds) seen by the recorder.
pub fn phases(h: &Server) -> Vec<(String, String, String, f64)> {
    h.requests()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.ends_with("/kprov/phase"))
        .filter_map(|s| {
            let v: serde_json::Value = serde_json::from_slice(&s.body).ok()?;
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
pub fn stand_in_reports(h: &Server) -> Vec<(String, serde_json::Value)> {
    h.requests()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.contains("/standin/"))
        .filter_map(|s| {
            let v: serde_json::Value = serde_json::from_slice(&s.body).ok()?;
            Some((v["tool"].as_str()?.to_string(), v))
        })
        .collect()
}
