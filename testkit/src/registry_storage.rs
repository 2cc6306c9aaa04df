//! What a registry really holds, read from its storage directory (committed blobs, manifest
//! revisions) and checked over its API (no revision refers to something it does not serve).

use std::path::{Path, PathBuf};

use crate::registry::Registry;

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
    /// Digests of every committed blob (layers, configs and manifests) in the storage.
    pub fn committed_blobs(&self) -> std::collections::BTreeSet<String> {
        committed_blobs(&self.data)
    }

    /// Bytes of every committed blob (each stored once: layers, configs and manifests).
    pub fn committed_bytes(&self) -> u64 {
        let mut files = Vec::new();
        walk(
            &self.data.join("docker/registry/v2/blobs/sha256"),
            &mut files,
        );
        files
            .iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "data"))
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
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
