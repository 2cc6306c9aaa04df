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
    /// Serve HTTPS with this certificate and key (`http.tls`).
    pub tls: Option<TlsFiles>,
    /// Bearer token auth (`auth.token`), e.g. against `tests/peers/tokenserver.py`.
    pub token: Option<TokenAuth>,
    /// Write the access log (one line per request) into [`Registry::log`], to count requests.
    pub access_log: bool,
}

/// PEM files of a certificate and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PKCS#8 PEM).
    pub key: PathBuf,
}

/// The registry's `auth.token` block.
#[derive(Debug, Clone)]
pub struct TokenAuth {
    /// Where clients get tokens (`https://127.0.0.1:PORT/token`).
    pub realm: String,
    /// The service name (the tokens' audience).
    pub service: String,
    /// The tokens' issuer.
    pub issuer: String,
    /// PEM bundle of the CA(s) that issued the token signing certificate.
    pub rootcertbundle: PathBuf,
}

/// A throw-away CA (rcgen, ECDSA P-256) issuing server and signing certificates for tests.
pub struct TestCa {
    /// Directory of every file written.
    pub dir: PathBuf,
    /// The CA certificate (PEM), for `--ca-bundle` and `rootcertbundle`.
    pub ca_pem: PathBuf,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl TestCa {
    /// A new CA named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).expect("ca dir");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        let ca_pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_pem, cert.pem()).expect("write ca");
        TestCa {
            dir: dir.to_path_buf(),
            ca_pem,
            params,
            key,
        }
    }

    /// Issue a certificate for `sans` (IP addresses become IP SANs) with a new P-256 key;
    /// written as `NAME.pem` / `NAME.key`.
    pub fn issue(&self, name: &str, sans: &[&str]) -> TlsFiles {
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("sans");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().expect("key");
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer).expect("sign");
        let files = TlsFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// A directory with only `ca.crt` (what skopeo's `--cert-dir` reads).
    pub fn cert_dir(&self) -> PathBuf {
        let d = self.dir.join("skopeo-certs");
        std::fs::create_dir_all(&d).expect("cert dir");
        std::fs::copy(&self.ca_pem, d.join("ca.crt")).expect("ca.crt");
        d
    }
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
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
            !opts.access_log,
            data.display()
        );
        if opts.readonly {
            cfg.push_str("  maintenance:\n    readonly:\n      enabled: true\n");
        }
        cfg.push_str(&format!("http:\n  addr: {addr}\n"));
        if let Some(t) = &opts.tls {
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                t.cert.display(),
                t.key.display()
            ));
        }
        if let Some(t) = &opts.token {
            cfg.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm,
                t.service,
                t.issuer,
                t.rootcertbundle.display()
            ));
        }
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

/// The kprov binary under test, run through `tests/peers/audit-run.sh` when `KPROV_AUDIT_DIR`
/// is set (as `tests/run.sh` does, for the suite-wide secret-leak scan; the wrapper execs
/// kprov, so the child's PID is kprov's and kill -9 tests work the same).
pub fn kprov() -> Command {
    if std::env::var_os("KPROV_AUDIT_DIR").is_some_and(|d| !d.is_empty()) {
        let mut c = Command::new("bash");
        c.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/audit-run.sh"
        ))
        .arg(env!("CARGO_BIN_EXE_kprov"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_kprov"))
    }
}

/// Where a peer that issues secrets records them for the secret-leak scan, when auditing
/// (`$KPROV_AUDIT_DIR/issued/PEER-PID-N`).
pub fn issued_secrets_file(peer: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("KPROV_AUDIT_DIR").filter(|d| !d.is_empty())?;
    let dir = PathBuf::from(dir).join("issued");
    std::fs::create_dir_all(&dir).ok()?;
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(dir.join(format!("{peer}-{}-{n}", std::process::id())))
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

/// `skopeo inspect --raw` of `docker://REF` with extra flags (`--cert-dir`, `--creds`,
/// `--tls-verify=false`, …); `Err(stderr)` when it fails.
pub fn skopeo_raw_with(reference: &str, extra: &[String]) -> Result<Vec<u8>, String> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .args(extra)
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// [`assert_identical_with_skopeo`] with skopeo flags for each side (TLS, credentials).
pub fn assert_identical_with_skopeo_opts(
    set: &ImageSet,
    upstream: &str,
    up_flags: &[String],
    mirror_of: impl Fn(&str) -> String,
    mi_flags: &[String],
) -> usize {
    let mut n = 0;
    let read = |r: &str, f: &[String]| {
        skopeo_raw_with(r, f).unwrap_or_else(|e| panic!("skopeo cannot read {r}: {e}"))
    };
    for img in &set.images {
        let up = format!("{upstream}/{}:{}", img.repo, img.tag);
        let mi = mirror_of(&format!("{}:{}", img.repo, img.tag));
        let a = read(&up, up_flags);
        let b = read(&mi, mi_flags);
        assert!(a == b, "manifest bytes differ for {up} vs {mi}");
        assert_eq!(a, img.top.bytes, "{up} does not serve the generated bytes");
        n += 1;
        let mi_base = mi
            .rsplit_once(':')
            .map(|(r, _)| r.to_string())
            .unwrap_or(mi.clone());
        for c in &img.children {
            let up_c = format!("{upstream}/{}@{}", img.repo, c.digest);
            let mi_c = format!("{mi_base}@{}", c.digest);
            assert!(
                read(&up_c, up_flags) == read(&mi_c, mi_flags),
                "platform manifest bytes differ for {up_c} vs {mi_c}"
            );
            n += 1;
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Registry storage (what a registry really holds, read from its filesystem)
// ---------------------------------------------------------------------------------------------

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

impl Registry {
    /// HTTP requests served so far (lines of the access log; needs
    /// [`RegistryOptions::access_log`]).
    pub fn requests(&self) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| {
                [
                    "\"GET /",
                    "\"HEAD /",
                    "\"PUT /",
                    "\"POST /",
                    "\"PATCH /",
                    "\"DELETE /",
                ]
                .iter()
                .any(|m| l.contains(m))
            })
            .count()
    }

    /// Digests of every committed blob (layers, configs and manifests) in the storage.
    pub fn committed_blobs(&self) -> std::collections::BTreeSet<String> {
        committed_blobs(&self.data)
    }

    /// `(repository, manifest digest)` of every manifest revision in the storage.
    pub fn manifest_revisions(&self) -> Vec<(String, String)> {
        manifest_revisions(&self.data)
    }
}

/// Digests of every committed blob under a registry storage root.
pub fn committed_blobs(data: &Path) -> std::collections::BTreeSet<String> {
    let mut files = Vec::new();
    walk(&data.join("docker/registry/v2/blobs/sha256"), &mut files);
    files
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "data"))
        .filter_map(|p| p.parent()?.file_name()?.to_str().map(str::to_string))
        .map(|h| format!("sha256:{h}"))
        .collect()
}

/// `(repository, manifest digest)` of every manifest revision under a storage root.
pub fn manifest_revisions(data: &Path) -> Vec<(String, String)> {
    let root = data.join("docker/registry/v2/repositories");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut out = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if let Some((repo, rest)) = rel.split_once("/_manifests/revisions/sha256/") {
            if let Some(hex) = rest.strip_suffix("/link") {
                out.push((repo.to_string(), format!("sha256:{hex}")));
            }
        }
    }
    out.sort();
    out
}

/// Every manifest revision in the storage of the plain-HTTP registry at `addr` refers only to
/// manifests and blobs that registry serves in the same repository. Returns the dangling
/// references (empty when the registry is consistent) and how many manifests were checked.
pub async fn dangling_references(addr: &str, data: &Path) -> (Vec<String>, usize) {
    let http = reqwest::Client::new();
    let mut bad = Vec::new();
    let revs = manifest_revisions(data);
    for (repo, d) in &revs {
        let resp = http
            .get(format!("http://{addr}/v2/{repo}/manifests/{d}"))
            .header("accept", "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
            .send()
            .await
            .expect("get manifest");
        if !resp.status().is_success() {
            bad.push(format!(
                "{repo}@{d}: revision in storage but GET answers {}",
                resp.status()
            ));
            continue;
        }
        let v: serde_json::Value = resp.json().await.expect("manifest json");
        let mut refs: Vec<(bool, String)> = Vec::new();
        for m in v["manifests"].as_array().into_iter().flatten() {
            refs.push((true, m["digest"].as_str().unwrap_or_default().to_string()));
        }
        if let Some(c) = v["config"]["digest"].as_str() {
            refs.push((false, c.to_string()));
        }
        for l in v["layers"].as_array().into_iter().flatten() {
            refs.push((false, l["digest"].as_str().unwrap_or_default().to_string()));
        }
        for (is_manifest, r) in refs {
            let kind = if is_manifest { "manifests" } else { "blobs" };
            let st = http
                .head(format!("http://{addr}/v2/{repo}/{kind}/{r}"))
                .header("accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json")
                .send()
                .await
                .expect("head")
                .status();
            if !st.is_success() {
                bad.push(format!(
                    "{repo}@{d} refers to {kind} {r}: HEAD answers {st}"
                ));
            }
        }
    }
    (bad, revs.len())
}

// ---------------------------------------------------------------------------------------------
// Other peers: Python scripts of tests/peers (token server, fault proxy), moto, nginx
// ---------------------------------------------------------------------------------------------

/// `tests/peers/NAME` of this repository.
pub fn peer_script(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name);
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// The peers venv: `$KPROV_PEERS/venv`, else `/opt/kprov-peers/venv` (made by install.sh).
fn peers_venv_bin(program: &str) -> Option<PathBuf> {
    let base = std::env::var_os("KPROV_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/kprov-peers"));
    let p = base.join("venv/bin").join(program);
    p.is_file().then_some(p)
}

/// The peers venv's python3 with `cryptography` importable (the token server signs with it).
pub fn require_python(test: &str) -> Option<PathBuf> {
    let ok = peers_venv_bin("python3").filter(|py| {
        Command::new(py)
            .args(["-c", "import cryptography"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if ok.is_some() {
        return ok;
    }
    let msg = "the peers venv python3 with `cryptography` (/opt/kprov-peers/venv, or $KPROV_PEERS/venv) is missing; install the test peers with `bash tests/peers/install.sh`";
    if skipping() {
        eprintln!("\n!!!!! SKIPPED {test}: {msg} (KPROV_SKIP_PEERS=1) !!!!!\n");
        None
    } else {
        panic!("{test}: {msg} (or set KPROV_SKIP_PEERS=1 to skip peer tests)");
    }
}

/// Spawn a peer with stdout/stderr in `log`, stopped by PID when the guard drops.
pub fn spawn_peer(name: &str, cmd: &mut Command, log: &Path) -> ChildGuard {
    let out = std::fs::File::create(log).expect("peer log");
    let child = cmd
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
    ChildGuard {
        name: name.into(),
        child,
    }
}

/// Wait until something listens on 127.0.0.1:`port` (panics with the log when the peer died
/// or did not come up within 30 s).
pub fn wait_listening(guard: &mut ChildGuard, port: u16, log: &Path) {
    let up = wait_until(Duration::from_secs(30), || {
        guard.child.try_wait().ok().flatten().is_none()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    if !up {
        panic!(
            "{} did not listen on 127.0.0.1:{port} (exit {:?}); log:\n{}",
            guard.name,
            guard.child.try_wait().ok().flatten(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// A minimal HTTP/1.0 request to 127.0.0.1:`port`; returns status and body.
pub fn http_raw(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `tests/peers/faultproxy.py` in front of any HTTP upstream (here: a registry), e.g. to slow
/// every request down with `[{"delay_ms": 200}]`.
pub struct FaultProxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    port: u16,
    _guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl FaultProxy {
    /// Start it on a free port forwarding to `http://upstream`.
    pub fn start(test: &str, upstream: &str) -> Option<FaultProxy> {
        let py = require_python(test)?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = dir.path().join("proxy.log");
        let mut g = spawn_peer(
            "faultproxy.py",
            Command::new(py).arg(peer_script("faultproxy.py")).args([
                "--listen",
                &port.to_string(),
                "--upstream",
                &format!("http://{upstream}"),
            ]),
            &log,
        );
        wait_listening(&mut g, port, &log);
        Some(FaultProxy {
            addr: format!("127.0.0.1:{port}"),
            port,
            _guard: g,
            _dir: dir,
        })
    }

    /// Replace the rules (JSON list, see faultproxy.py).
    pub fn set_rules(&self, json: &str) {
        let (st, body) = http_raw(self.port, "POST", "/__fault__/rules", json);
        assert_eq!(st, 200, "setting proxy rules: {body}");
    }
}

/// The token server (`tests/peers/tokenserver.py`) over HTTPS.
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
        let mut g = spawn_peer(
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
        wait_listening(&mut g, port, &out);
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

/// Debian nginx on a free loopback port: `GET /src/…` serves `root/src`, `PUT /put/…` writes
/// under `root/put` (`dav_methods PUT; create_full_put_path on`) and GET reads it back. The
/// access log counts requests.
pub struct Nginx {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Document root (`src/` and `put/` below it).
    pub root: PathBuf,
    /// Access log (`METHOD URI STATUS` per line).
    pub access_log: PathBuf,
    _guard: ChildGuard,
}

impl Nginx {
    /// Start one with its files in `dir`.
    pub fn start(test: &str, dir: &Path) -> Option<Nginx> {
        let bin = require(test, "nginx")?;
        let port = free_port();
        let root = dir.join("root");
        for d in ["src", "put", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let access_log = dir.join("access.log");
        let t = dir.join("nginx-tmp");
        std::fs::create_dir_all(&t).unwrap();
        let user = if euid_is_root() {
            "user root root;\n"
        } else {
            ""
        };
        let conf = format!(
            "{user}daemon off;\nworker_processes 1;\npid {pid};\nerror_log {err} warn;\nevents {{ worker_connections 256; }}\nhttp {{\n  log_format k '$request_method $uri $status';\n  access_log {acc} k;\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n  client_max_body_size 0;\n  server {{\n    listen 127.0.0.1:{port};\n    root {root};\n    location /src/ {{ }}\n    location /put/ {{\n      dav_methods PUT;\n      create_full_put_path on;\n      dav_access user:rw group:r all:r;\n    }}\n  }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            err = dir.join("error.log").display(),
            acc = access_log.display(),
            t = t.display(),
            root = root.display(),
        );
        let conf_file = dir.join("nginx.conf");
        std::fs::write(&conf_file, conf).unwrap();
        let log = dir.join("nginx.out");
        let mut g = spawn_peer(
            "nginx",
            Command::new(bin)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&conf_file),
            &log,
        );
        wait_listening(&mut g, port, &dir.join("error.log"));
        Some(Nginx {
            addr: format!("127.0.0.1:{port}"),
            root,
            access_log,
            _guard: g,
        })
    }

    /// Access log lines with this method (e.g. `PUT`).
    pub fn requests(&self, method: &str) -> Vec<String> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&format!("{method} ")))
            .map(str::to_string)
            .collect()
    }
}

fn euid_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A moto server (S3) on a free loopback port (`$KPROV_MOTO_SERVER`, the peers venv, or PATH).
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _guard: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Start it.
    pub fn start(test: &str) -> Option<Moto> {
        let bin = match std::env::var_os("KPROV_MOTO_SERVER") {
            Some(p) => PathBuf::from(p),
            None => match peers_venv_bin("moto_server") {
                Some(p) => p,
                None => require(test, "moto_server")?,
            },
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = dir.path().join("moto.log");
        let mut g = spawn_peer(
            "moto_server",
            Command::new(bin).args(["-H", "127.0.0.1", "-p", &port.to_string()]),
            &log,
        );
        wait_listening(&mut g, port, &log);
        let ok = wait_until(Duration::from_secs(60), || {
            http_raw(port, "GET", "/moto-api/", "").0 == 200
        });
        assert!(ok, "moto did not answer on {port}");
        Some(Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            _guard: g,
            _dir: dir,
        })
    }

    /// The environment kprov's S3 client needs for this moto.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KPROV_S3_ENDPOINT", self.endpoint.clone()),
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

/// A cluster in a new `file://` store under `dir` (libvirt test driver: nothing is created in a
/// cloud): 1 amd64 control plane + 1 arm64 worker, flannel, `assets` given as a YAML flow map
/// (e.g. `{containerRegistry: "127.0.0.1:5000", insecure: true}`). Returns the store URL, the
/// `get assets -o json` catalogue and its upstream image references.
pub fn cluster_with_catalogue(
    dir: &Path,
    name: &str,
    assets: &str,
) -> (String, serde_json::Value, Vec<String>) {
    let state = format!("file://{}", dir.join("state").display());
    let spec = dir.join("cluster.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n  provider: {{libvirt: {{uri: \"test:///default\"}}}}\n  kubernetesVersion: {}\n  networking: {{cni: flannel}}\n  assets: {assets}\n  addons: {{nvidiaDevicePlugin: {{enabled: false}}}}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: control-plane}}\nspec: {{role: control-plane, count: 1, arch: amd64}}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: nodes}}\nspec: {{role: node, count: 1, arch: arm64}}\n",
            kprov::spec::versions::default_version(),
        ),
    )
    .unwrap();
    let mut c = kprov();
    c.args(["--state", &state, "create", "-f"]).arg(&spec);
    let (ok, _, err) = run(c);
    assert!(ok, "create: {err}");
    let mut c = kprov();
    c.args(["--state", &state, "get", "assets", name, "-o", "json"]);
    let (ok, out, err) = run(c);
    assert!(ok, "get assets: {err}");
    let cat: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ups = cat["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["upstream"].as_str().unwrap().to_string())
        .collect();
    (state, cat, ups)
}
