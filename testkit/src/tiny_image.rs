//! A tiny real OCI image built in Rust: one file in one gzip tar layer, unpackable (its
//! `diff_ids` match the layer), for pulls through containerd and the mirror.

use std::io::Write;

use crate::images::digest as sha;

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
