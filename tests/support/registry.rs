//! A real OCI registry for tests: Debian's `docker-registry` (distribution v2) on 127.0.0.1 with
//! filesystem storage in a temp dir, stopped by PID when dropped, plus a tiny real image built
//! in Rust and pushed over the registry HTTP API.
//! Include with `#[path = "support/registry.rs"] mod registry;` next to `support/peers.rs` as `peers`.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::peers::{self, ChildGuard};

/// A running registry.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its combined stdout/stderr (access log).
    pub log: PathBuf,
    _guard: ChildGuard,
    _dir: tempfile::TempDir,
}

/// Start `docker-registry serve` on a free loopback port; `None` when peers are skipped.
pub fn start(test: &str) -> Option<Registry> {
    let bin = peers::require(test, "docker-registry")?;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = peers::free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write registry config");
    let log = dir.path().join("registry.log");
    let out = std::fs::File::create(&log).expect("log file");
    let child = Command::new(bin)
        .arg("serve")
        .arg(&config)
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let mut guard = ChildGuard::new("docker-registry", child);
    let up = peers::wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    if !up {
        let status = guard.exited();
        panic!(
            "docker-registry did not listen on {addr} within 20 s (exit {status:?}); log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    Some(Registry {
        addr,
        log,
        _guard: guard,
        _dir: dir,
    })
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A one-layer OCI image: (manifest, config, layer) bytes.
pub struct Image {
    /// OCI image manifest JSON.
    pub manifest: Vec<u8>,
    /// OCI image config JSON.
    pub config: Vec<u8>,
    /// gzip-compressed tar layer.
    pub layer: Vec<u8>,
}

/// The GOARCH of this machine.
pub fn host_goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Build a real image with one file in one gzip tar layer, for this machine's platform.
pub fn tiny_image(file_name: &str, content: &[u8]) -> Image {
    tiny_image_for(host_goarch(), file_name, content)
}

/// Build a real (unpackable: `diff_ids` match the layer) one-layer image for `arch`.
pub fn tiny_image_for(arch: &str, file_name: &str, content: &[u8]) -> Image {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, file_name, content).expect("tar");
        b.finish().expect("tar");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes).expect("gzip");
    let layer = gz.finish().expect("gzip");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": [format!("/{file_name}")]},
        "rootfs": {"type": "layers", "diff_ids": [sha(&tar_bytes)]},
        "history": [{"created_by": "kprov test"}]
    }))
    .expect("json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&layer), "size": layer.len()}]
    }))
    .expect("json");
    Image {
        manifest,
        config,
        layer,
    }
}

impl Registry {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The access log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Push one image per `(arch, image)` under its digest and an OCI image index listing them
    /// as `repo:tag`; returns the index digest.
    pub async fn push_multi_arch(&self, repo: &str, tag: &str, images: &[(&str, Image)]) -> String {
        let mut entries = Vec::new();
        for (arch, image) in images {
            let digest = self.push(repo, &sha(&image.manifest), image).await;
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
        sha(&index)
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
                .put(format!("{loc}{sep}digest={}", sha(blob)))
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
        sha(&image.manifest)
    }
}
