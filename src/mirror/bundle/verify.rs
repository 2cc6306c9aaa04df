//! `kprov mirror --verify-bundle FILE`: check a bundle where it arrives, without a registry —
//! every part against `SHA256SUMS`, the index, every manifest's and blob's digest and size,
//! every file's SHA-256 — so a bad copy is found before the bundle is carried further.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{blob_entry, BundlePlatforms, OpenBundle, INDEX_ENTRY};
use crate::mirror::{ImageRef, MirrorError};

/// What a good bundle holds.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The bundle (its file, or its parts' base name).
    pub bundle: String,
    /// Files it is stored in (1 for a whole bundle).
    pub parts: usize,
    /// Images.
    pub images: usize,
    /// Blob entries (manifests, configs and layers, each once).
    pub blobs: usize,
    /// Files.
    pub files: usize,
    /// Size in bytes.
    pub bytes: u64,
    /// Platforms of multi-arch images: `all` or e.g. `linux/arm64`.
    pub platforms: String,
    /// The cluster(s) it was made for.
    pub cluster: Option<String>,
}

/// Check everything in the bundle at `path` (whole or split); the first bad part or entry is
/// the error.
pub fn verify(path: &Path) -> Result<VerifyReport, MirrorError> {
    let b = OpenBundle::open_verified(path)?;
    // Distinct blobs with the size the index gives them (manifests are checked as read).
    let mut blobs: BTreeMap<&str, u64> = BTreeMap::new();
    for i in &b.index.images {
        ImageRef::parse(&i.upstream)
            .map_err(|e| b.err(INDEX_ENTRY, format!("images[].upstream: {e}")))?;
        for m in std::iter::once(&i.manifest).chain(&i.children) {
            b.read_manifest(m)?;
        }
        for x in &i.blobs {
            blobs.insert(&x.digest, x.size);
        }
    }
    for digest in blobs.keys() {
        let entry = blob_entry(digest);
        let actual = format!("sha256:{}", b.hash_entry(&entry, None)?);
        if actual != *digest {
            return Err(b.err(
                &entry,
                format!("content hashes to {actual}, expected {digest}"),
            ));
        }
    }
    for f in &b.index.files {
        let actual = b.hash_entry(&f.entry, None)?;
        if actual != f.sha256 {
            return Err(b.err(
                &f.entry,
                format!(
                    "file {}: content hashes to sha256:{actual}, expected sha256:{}",
                    f.name, f.sha256
                ),
            ));
        }
    }
    Ok(VerifyReport {
        bundle: b.path.display().to_string(),
        parts: b.parts.parts.len(),
        images: b.index.images.len(),
        blobs: b.entries.keys().filter(|k| k.starts_with("blobs/")).count(),
        files: b.index.files.len(),
        bytes: b.parts.total(),
        platforms: BundlePlatforms::describe(b.index.platforms.as_ref()),
        cluster: b.index.cluster.clone(),
    })
}
