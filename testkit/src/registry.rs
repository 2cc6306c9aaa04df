//! Debian's `docker-registry` (distribution v2) on a free loopback port with filesystem storage
//! in a temp dir (optionally with htpasswd or token auth, TLS, read-only), stopped by PID when
//! dropped; and pushing images into a registry over the registry HTTP API (independent of
//! kprov's own client: these are the test fixtures).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::images::{digest, BlobData, GenManifest, ImageSet};
use crate::peers::require;
use crate::ports::free_port;
use crate::process::ChildGuard;
use crate::test_ca::TlsFiles;
use crate::tiny_image::Image;
use crate::wait::wait_until;

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
    /// Log at level `info` (each request's handling) instead of `warn`.
    pub info_log: bool,
}

impl RegistryOptions {
    /// Plain HTTP, no auth, access log and `info` log on (for tests that read the log).
    pub fn verbose() -> RegistryOptions {
        RegistryOptions {
            access_log: true,
            info_log: true,
            ..RegistryOptions::default()
        }
    }
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

/// A running `docker-registry`.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Storage root.
    pub data: PathBuf,
    /// Its combined stdout/stderr (log and access log).
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
            "version: 0.1\nlog:\n  level: {}\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
            if opts.info_log { "info" } else { "warn" },
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
        let mut guard = ChildGuard::spawn(
            "docker-registry",
            Command::new(bin).arg("serve").arg(&config),
            &log,
        );
        let up = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        if !up {
            let st = guard.exited();
            panic!(
                "docker-registry did not listen on {addr} within 20 s (exit {st:?}); log:\n{}",
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

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// HTTP requests served so far (lines of the access log; needs
    /// [`RegistryOptions::access_log`]).
    pub fn requests(&self) -> usize {
        self.log_text()
            .lines()
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

    /// Push one image per `(arch, image)` under its digest and an OCI image index listing them
    /// as `repo:tag`; returns the index digest.
    pub async fn push_multi_arch(&self, repo: &str, tag: &str, images: &[(&str, Image)]) -> String {
        let mut entries = Vec::new();
        for (arch, image) in images {
            let digest = self.push(repo, &digest(&image.manifest), image).await;
            entries.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": image.manifest.len(),
                "platform": {"architecture": arch, "os": "linux"}
            }));
        }
        let index = serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries
        }))
        .expect("json");
        let put = reqwest::Client::new()
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.url()))
            .header("content-type", "application/vnd.oci.image.index.v1+json")
            .body(index.clone())
            .send()
            .await
            .expect("put index");
        assert_eq!(put.status().as_u16(), 201, "put index {repo}:{tag}");
        digest(&index)
    }

    /// Push `image` as `repo:tag` (a tag or a digest) over the registry API; returns the
    /// manifest digest.
    pub async fn push(&self, repo: &str, tag: &str, image: &Image) -> String {
        let http = reqwest::Client::new();
        for blob in [&image.config, &image.layer] {
            let start = http
                .post(format!("{}/v2/{repo}/blobs/uploads/", self.url()))
                .send()
                .await
                .expect("start upload");
            assert_eq!(
                start.status().as_u16(),
                202,
                "start upload of {repo}: {}",
                start.status()
            );
            let loc = start
                .headers()
                .get("location")
                .expect("upload location")
                .to_str()
                .expect("ascii")
                .to_string();
            let loc = if loc.starts_with('/') {
                format!("{}{loc}", self.url())
            } else {
                loc
            };
            let sep = if loc.contains('?') { '&' } else { '?' };
            let put = http
                .put(format!("{loc}{sep}digest={}", digest(blob)))
                .header("content-type", "application/octet-stream")
                .body(blob.clone())
                .send()
                .await
                .expect("upload blob");
            assert_eq!(
                put.status().as_u16(),
                201,
                "upload blob to {repo}: {}",
                put.status()
            );
        }
        let put = http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.url()))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(image.manifest.clone())
            .send()
            .await
            .expect("put manifest");
        assert_eq!(
            put.status().as_u16(),
            201,
            "put manifest {repo}:{tag}: {} {}",
            put.status(),
            put.text().await.unwrap_or_default()
        );
        digest(&image.manifest)
    }
}

/// Push a generated set into the plain-HTTP registry at `addr`, with basic auth `creds` if
/// given.
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
