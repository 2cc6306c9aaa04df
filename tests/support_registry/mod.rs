//! Shared helpers for the mirror tests and benchmark: Debian `docker-registry` instances on
//! 127.0.0.1 (optionally with htpasswd auth or read-only), `skopeo` as the cross-check, and a
//! deterministic generator of a Kubernetes-like multi-arch image set.
//! Include with `#[path = "support_registry/mod.rs"] mod support_registry;`.
//!
//! A missing peer binary fails the test naming `bash tests/peers/install.sh`, unless
//! `KPROV_SKIP_PEERS=1` (then SKIPPED is printed and the test returns). Every process started
//! here is stopped by PID when its guard drops.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Is `KPROV_SKIP_PEERS=1` set?
pub fn skipping() -> bool {
    std::env::var("KPROV_SKIP_PEERS").is_ok_and(|v| v == "1")
}

/// Path of a peer program on PATH; `None` (after SKIPPED) only with `KPROV_SKIP_PEERS=1`.
pub fn require(test: &str, program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    if found.is_some() {
        return found;
    }
    let msg = format!("test peer `{program}` is missing; install the test peers with `bash tests/peers/install.sh`");
    if skipping() {
        eprintln!("\n!!!!! SKIPPED {test}: {msg} (KPROV_SKIP_PEERS=1) !!!!!\n");
        None
    } else {
        panic!("{test}: {msg} (or set KPROV_SKIP_PEERS=1 to skip peer tests)");
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Poll `f` every 50 ms until true or `timeout`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A child stopped by PID when dropped (SIGTERM, then SIGKILL after 5 s).
pub struct ChildGuard {
    /// What it is.
    pub name: String,
    /// The process.
    pub child: Child,
}

impl ChildGuard {
    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let stopped = wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Options of a test registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// htpasswd basic auth with this user and password.
    pub htpasswd: Option<(String, String)>,
    /// `storage.maintenance.readonly.enabled: true` (refuses every write).
    pub readonly: bool,
    /// Reuse this storage directory (e.g. to restart read-only over existing data).
    pub data_dir: Option<PathBuf>,
}

/// A running `docker-registry`.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Storage root.
    pub data: PathBuf,
    /// Log file.
    pub log: PathBuf,
    guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Start one; `None` when peers are skipped.
    pub fn start(test: &str, opts: RegistryOptions) -> Option<Registry> {
        let bin = require(test, "docker-registry")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let data = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
            data.display()
        );
        if opts.readonly {
            cfg.push_str("  maintenance:\n    readonly:\n      enabled: true\n");
        }
        cfg.push_str(&format!("http:\n  addr: {addr}\n"));
        if let Some((u, p)) = &opts.htpasswd {
            let hash = bcrypt::hash(p, 5).expect("bcrypt");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{u}:{hash}\n")).expect("htpasswd");
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kprov-test\n    path: {}\n",
                file.display()
            ));
        }
        let config = dir.path().join("config.yml");
        std::fs::write(&config, cfg).expect("config");
        let log = dir.path().join("registry.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let mut guard = ChildGuard {
            name: "docker-registry".into(),
            child,
        };
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        if !up {
            let st = guard.child.try_wait().ok().flatten();
            panic!(
                "docker-registry did not listen on {addr} (exit {st:?}); log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Some(Registry {
            addr,
            data,
            log,
            guard,
            _dir: dir,
        })
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }
}

/// `skopeo inspect --raw` of `docker://REF` (plain HTTP); `None` when it fails.
pub fn skopeo_raw(reference: &str, creds: Option<&str>) -> Option<Vec<u8>> {
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(cr) = creds {
        c.args(["--creds", cr]);
    }
    let out = c
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    out.status.success().then_some(out.stdout)
}

/// Compare every tag and platform of `set` between two registries with skopeo; panics naming
/// the first difference. Returns the number of manifests compared.
pub fn assert_identical_with_skopeo(
    set: &ImageSet,
    upstream: &str,
    mirror_of: impl Fn(&str) -> String,
) -> usize {
    let mut n = 0;
    for img in &set.images {
        let up = format!("{upstream}/{}:{}", img.repo, img.tag);
        let mi = mirror_of(&format!("{}:{}", img.repo, img.tag));
        let a = skopeo_raw(&up, None).unwrap_or_else(|| panic!("skopeo cannot read {up}"));
        let b = skopeo_raw(&mi, None).unwrap_or_else(|| panic!("skopeo cannot read mirrored {mi}"));
        assert!(a == b, "manifest bytes differ for {up} vs {mi}");
        assert_eq!(
            a, img.top.bytes,
            "upstream {up} does not serve the generated bytes"
        );
        n += 1;
        for c in &img.children {
            let mi_base = mi
                .rsplit_once(':')
                .map(|(r, _)| r.to_string())
                .unwrap_or(mi.clone());
            let up_c = format!("{upstream}/{}@{}", img.repo, c.digest);
            let mi_c = format!("{mi_base}@{}", c.digest);
            let a = skopeo_raw(&up_c, None).unwrap_or_else(|| panic!("skopeo cannot read {up_c}"));
            let b = skopeo_raw(&mi_c, None)
                .unwrap_or_else(|| panic!("skopeo cannot read mirrored {mi_c}"));
            assert!(
                a == b,
                "platform manifest bytes differ for {up_c} vs {mi_c}"
            );
            n += 1;
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Deterministic synthetic image set
// ---------------------------------------------------------------------------------------------

/// A blob to push: bytes in memory or a file on disk (for huge layers).
#[derive(Debug, Clone)]
pub enum BlobData {
    /// In memory.
    Bytes(Vec<u8>),
    /// On disk (streamed when pushed).
    File(PathBuf),
}

/// A blob with its digest and size.
#[derive(Debug, Clone)]
pub struct Blob {
    /// `sha256:…`.
    pub digest: String,
    /// Size.
    pub size: u64,
    /// Content.
    pub data: BlobData,
}

/// A manifest as generated (exact bytes).
#[derive(Debug, Clone)]
pub struct GenManifest {
    /// Bytes.
    pub bytes: Vec<u8>,
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: String,
}

impl GenManifest {
    fn new(bytes: String, media_type: &str) -> GenManifest {
        let bytes = bytes.into_bytes();
        GenManifest {
            digest: digest(&bytes),
            bytes,
            media_type: media_type.into(),
        }
    }
}

/// One image: repository (upstream path incl. host, e.g. `registry.k8s.io/pause`) and tag.
#[derive(Debug, Clone)]
pub struct GenImage {
    /// Repository path in the upstream test registry.
    pub repo: String,
    /// Tag.
    pub tag: String,
    /// The top manifest (index, list or single manifest).
    pub top: GenManifest,
    /// Platform manifests.
    pub children: Vec<GenManifest>,
    /// Blobs of this image.
    pub blobs: Vec<String>,
}

/// A generated set.
#[derive(Debug, Clone, Default)]
pub struct ImageSet {
    /// Images.
    pub images: Vec<GenImage>,
    /// All blobs by digest (shared ones once).
    pub blobs: BTreeMap<String, Blob>,
}

impl ImageSet {
    /// Total bytes of distinct blobs.
    pub fn total_bytes(&self) -> u64 {
        self.blobs.values().map(|b| b.size).sum()
    }
    /// `repo:tag` of every image.
    pub fn references(&self) -> Vec<String> {
        self.images
            .iter()
            .map(|i| format!("{}:{}", i.repo, i.tag))
            .collect()
    }
}

/// `sha256:` of bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A cheap deterministic byte generator (xorshift64*), incompressible enough that gzip at level
/// 0 or 1 keeps the size.
pub struct Prng(u64);

impl Prng {
    /// Seeded from a string.
    pub fn new(seed: &str) -> Prng {
        let mut h = 0xcbf29ce484222325u64;
        for b in seed.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        Prng(h | 1)
    }
    /// Fill a buffer.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            let v = x.wrapping_mul(0x2545F4914F6CDD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A gzip-compressed tar layer with one file of `size` pseudo-random bytes, written to `w`.
pub fn write_layer(seed: &str, size: u64, w: impl Write) -> std::io::Result<()> {
    let gz = flate2::write::GzEncoder::new(w, flate2::Compression::none());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    struct Gen(Prng, u64);
    impl std::io::Read for Gen {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (buf.len() as u64).min(self.1) as usize;
            self.0.fill(&mut buf[..n]);
            self.1 -= n as u64;
            Ok(n)
        }
    }
    tar.append_data(
        &mut header,
        format!("data/{}", seed.replace(['/', ':'], "_")),
        Gen(Prng::new(seed), size),
    )?;
    tar.into_inner()?.finish()?.flush()
}

fn layer(seed: &str, size: u64, dir: Option<&Path>) -> Blob {
    match dir {
        Some(d) if size > 64 * 1024 * 1024 => {
            let path = d.join(format!(
                "layer-{}",
                digest(seed.as_bytes()).trim_start_matches("sha256:")
            ));
            struct HashW<W: Write>(W, Sha256, u64);
            impl<W: Write> Write for HashW<W> {
                fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                    let n = self.0.write(b)?;
                    self.1.update(&b[..n]);
                    self.2 += n as u64;
                    Ok(n)
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    self.0.flush()
                }
            }
            let f = std::io::BufWriter::new(std::fs::File::create(&path).expect("layer file"));
            let mut hw = HashW(f, Sha256::new(), 0);
            write_layer(seed, size, &mut hw).expect("write layer");
            hw.flush().expect("flush");
            Blob {
                digest: format!("sha256:{}", hex::encode(hw.1.clone().finalize())),
                size: hw.2,
                data: BlobData::File(path),
            }
        }
        _ => {
            let mut v = Vec::new();
            write_layer(seed, size, &mut v).expect("layer");
            Blob {
                digest: digest(&v),
                size: v.len() as u64,
                data: BlobData::Bytes(v),
            }
        }
    }
}

/// Sizes of a generated set.
#[derive(Debug, Clone)]
pub struct SetSizes {
    /// Shared base layer per arch.
    pub base: u64,
    /// Unique layer per image and arch.
    pub unique: u64,
    /// Directory for layers over 64 MiB (streamed from disk).
    pub dir: Option<PathBuf>,
}

impl SetSizes {
    /// Small set for tests (~1.5 MB for 11 images).
    pub fn small() -> SetSizes {
        SetSizes {
            base: 128 * 1024,
            unique: 24 * 1024,
            dir: None,
        }
    }
}

/// Generate images for `refs` (`host/path:tag`, used as repository path in the test upstream).
/// Every image is multi-arch (amd64 + arm64), alternating OCI index and Docker manifest list,
/// except those whose reference contains `single`, which get one OCI manifest. Each arch has a
/// base layer shared by all images. Manifests are written with an odd key order and 3-space
/// indentation, unlike serde's output, so a re-serialising copier changes their digests.
pub fn generate(refs: &[&str], sizes: &SetSizes) -> ImageSet {
    let mut set = ImageSet::default();
    let arches = ["amd64", "arm64"];
    let bases: Vec<Blob> = arches
        .iter()
        .map(|a| layer(&format!("base-{a}"), sizes.base, sizes.dir.as_deref()))
        .collect();
    for b in &bases {
        set.blobs.insert(b.digest.clone(), b.clone());
    }
    for (n, r) in refs.iter().enumerate() {
        let (repo, tag) = r.rsplit_once(':').expect("tag");
        let docker = n % 2 == 1;
        let (man_t, cfg_t, lay_t, idx_t) = if docker {
            (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "application/vnd.docker.distribution.manifest.list.v2+json",
            )
        } else {
            (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.oci.image.index.v1+json",
            )
        };
        let single = r.contains("single");
        let mut children = Vec::new();
        let mut blobs = Vec::new();
        for (ai, arch) in arches.iter().enumerate() {
            if single && ai > 0 {
                break;
            }
            let base = &bases[ai];
            let uniq = layer(&format!("{r}-{arch}"), sizes.unique, sizes.dir.as_deref());
            let config = format!(
                "{{\"architecture\":\"{arch}\",\"os\":\"linux\",\"config\":{{\"Cmd\":[\"/{}\"]}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}},\"created\":\"1970-01-01T00:00:00Z\"}}",
                repo.rsplit('/').next().unwrap_or(repo)
            );
            let cfg = Blob {
                digest: digest(config.as_bytes()),
                size: config.len() as u64,
                data: BlobData::Bytes(config.into_bytes()),
            };
            let m = format!(
                "{{\n   \"layers\": [\n      {{\"size\": {},   \"digest\": \"{}\", \"mediaType\": \"{lay_t}\"}},\n      {{\"size\": {},   \"digest\": \"{}\", \"mediaType\": \"{lay_t}\"}}\n   ],\n   \"config\": {{ \"digest\": \"{}\", \"size\": {}, \"mediaType\": \"{cfg_t}\" }},\n   \"mediaType\": \"{man_t}\",\n   \"schemaVersion\": 2\n}}\n",
                base.size, base.digest, uniq.size, uniq.digest, cfg.digest, cfg.size
            );
            let gm = GenManifest::new(m, man_t);
            for b in [base.clone(), uniq, cfg] {
                blobs.push(b.digest.clone());
                set.blobs.insert(b.digest.clone(), b);
            }
            children.push((arch.to_string(), gm));
        }
        let top = if single {
            children.remove(0).1
        } else {
            let entries: Vec<String> = children
                .iter()
                .map(|(arch, m)| {
                    format!(
                        "    {{ \"platform\": {{\"os\": \"linux\", \"architecture\": \"{arch}\"}},\n      \"size\": {},\n      \"mediaType\": \"{man_t}\",\n      \"digest\": \"{}\" }}",
                        m.bytes.len(),
                        m.digest
                    )
                })
                .collect();
            GenManifest::new(
                format!(
                    "{{ \"mediaType\": \"{idx_t}\",\n  \"manifests\": [\n{}\n  ],\n  \"schemaVersion\": 2 }}",
                    entries.join(",\n")
                ),
                idx_t,
            )
        };
        set.images.push(GenImage {
            repo: repo.to_string(),
            tag: tag.to_string(),
            top,
            children: children.into_iter().map(|(_, m)| m).collect(),
            blobs,
        });
    }
    set
}

/// The 11-reference Kubernetes-like set the registry lab describes (core images, CNI, add-ons,
/// one single-platform image).
pub const K8S_LIKE: &[&str] = &[
    "registry.k8s.io/kube-apiserver:v1.33.13",
    "registry.k8s.io/kube-controller-manager:v1.33.13",
    "registry.k8s.io/kube-scheduler:v1.33.13",
    "registry.k8s.io/kube-proxy:v1.33.13",
    "registry.k8s.io/pause:3.10",
    "registry.k8s.io/etcd:3.5.24-0",
    "registry.k8s.io/coredns/coredns:v1.12.0",
    "ghcr.io/flannel-io/flannel:v0.28.9",
    "quay.io/metallb/speaker:v0.16.1",
    "nvcr.io/nvidia/k8s-device-plugin:v0.20.0",
    "docker.io/library/single-arch-tool:1.0-single",
];

/// Push a set into a registry over plain HTTP (independent of kprov's client: this is the test
/// fixture). `prefix` is prepended to every repository (`""` for none).
pub async fn push_set(addr: &str, set: &ImageSet, creds: Option<(&str, &str)>) {
    let http = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| match creds {
        Some((u, p)) => r.basic_auth(u, Some(p)),
        None => r,
    };
    let mut pushed: std::collections::BTreeSet<(String, String)> = Default::default();
    for img in &set.images {
        for d in &img.blobs {
            if !pushed.insert((img.repo.clone(), d.clone())) {
                continue;
            }
            let b = &set.blobs[d];
            let resp = auth(http.post(format!("http://{addr}/v2/{}/blobs/uploads/", img.repo)))
                .send()
                .await
                .expect("start upload");
            assert_eq!(resp.status().as_u16(), 202, "start upload in {}", img.repo);
            let loc = resp.headers()["location"].to_str().unwrap().to_string();
            let loc = if loc.starts_with("http") {
                loc
            } else {
                format!("http://{addr}{loc}")
            };
            let sep = if loc.contains('?') { '&' } else { '?' };
            let body = match &b.data {
                BlobData::Bytes(v) => reqwest::Body::from(v.clone()),
                BlobData::File(p) => {
                    let f = tokio::fs::File::open(p).await.expect("open layer");
                    reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f))
                }
            };
            let resp = auth(http.put(format!("{loc}{sep}digest={d}")))
                .header("content-type", "application/octet-stream")
                .header("content-length", b.size)
                .body(body)
                .send()
                .await
                .expect("put blob");
            assert_eq!(
                resp.status().as_u16(),
                201,
                "put blob {d}: {:?}",
                resp.text().await
            );
        }
        for m in img.children.iter() {
            put_manifest(&http, addr, &img.repo, &m.digest, m, creds).await;
        }
        put_manifest(&http, addr, &img.repo, &img.tag, &img.top, creds).await;
    }
}

/// PUT one manifest.
pub async fn put_manifest(
    http: &reqwest::Client,
    addr: &str,
    repo: &str,
    reference: &str,
    m: &GenManifest,
    creds: Option<(&str, &str)>,
) {
    let mut r = http
        .put(format!("http://{addr}/v2/{repo}/manifests/{reference}"))
        .header("content-type", &m.media_type)
        .body(m.bytes.clone());
    if let Some((u, p)) = creds {
        r = r.basic_auth(u, Some(p));
    }
    let resp = r.send().await.expect("put manifest");
    assert_eq!(
        resp.status().as_u16(),
        201,
        "put manifest {repo}:{reference}: {:?}",
        resp.text().await
    );
}

/// The kprov binary under test.
pub fn kprov() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kprov"))
}

/// Run a command, returning (success, stdout, stderr).
pub fn run(mut c: Command) -> (bool, String, String) {
    let out = c.output().expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
