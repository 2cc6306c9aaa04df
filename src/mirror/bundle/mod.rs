//! Offline bundles: everything a cluster pulls in one tar file, to carry into a restricted
//! network.
//!
//! Layout (an OCI image layout, so other tools can read the images too):
//!
//! ```text
//! kprov-bundle.json        first entry: every image (upstream name, manifest digests, blobs)
//!                          and file (upstream URL, SHA-256, size) — the import's plan
//! oci-layout
//! index.json               one entry per image, annotated with its upstream reference
//! blobs/sha256/<hex>       manifests, configs and layers, each stored once however many
//!                          images share it
//! files/<host>/<path>      binaries, laid out like a file repository
//! ```
//!
//! The tar is uncompressed (layers are gzip already), so the import reads blobs straight from
//! their byte ranges, concurrently, and streams them to the registry while verifying digests.
//! Export writes into `FILE.partial/` (each blob renamed into place only once verified) and tars
//! it at the end — whole, or with `--split` in numbered parts plus a `SHA256SUMS` list
//! ([`parts`]), read back without concatenating them — so an interrupted export resumes; import skips what the target already has,
//! so an interrupted import resumes too. A corrupted bundle is rejected naming the bad entry.

use serde::{Deserialize, Serialize};

use super::copy::CopyReport;
use super::files::{self, FileOutcome};
use crate::spec::Arch;

mod export;
mod import;
mod open;
pub mod parts;
mod verify;

pub use export::{export, ExportRequest};
pub use import::import;
pub use open::OpenBundle;
pub use verify::{verify, VerifyReport};

/// Name of the bundle's own index entry.
pub const INDEX_ENTRY: &str = "kprov-bundle.json";
/// Version of the bundle format.
pub const FORMAT_VERSION: u32 = 1;

/// A blob (or manifest) in the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleBlob {
    /// `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type (manifests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// An image in the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleImage {
    /// Upstream reference, e.g. `registry.k8s.io/pause:3.10`.
    pub upstream: String,
    /// The top manifest (index or image manifest).
    pub manifest: BundleBlob,
    /// Platform manifests of an index, in push order.
    pub children: Vec<BundleBlob>,
    /// Configs and layers.
    pub blobs: Vec<BundleBlob>,
}

/// A file in the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// Binary name.
    pub name: String,
    /// Upstream URL.
    pub upstream_url: String,
    /// SHA-256 (hex).
    pub sha256: String,
    /// The CPU architecture this entry is for (`amd64`, `arm64`).
    pub arch: Arch,
    /// Size in bytes.
    pub size: u64,
    /// Tar entry.
    pub entry: String,
}

/// `kprov-bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleIndex {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Cluster(s) it was made for, comma separated (informational).
    #[serde(default)]
    pub cluster: Option<String>,
    /// Platforms of multi-arch images it holds; absent in bundles written before kprov
    /// recorded it (they hold every platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<BundlePlatforms>,
    /// The images it holds.
    pub images: Vec<BundleImage>,
    /// The files it holds.
    pub files: Vec<BundleFile>,
}

/// Which platforms of multi-arch images a bundle holds: `"all"` (unfiltered, byte-identical
/// to upstream) or a list like `["linux/arm64"]` (indexes rewritten to list only those).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BundlePlatforms {
    /// Only these `os/arch[/variant]`.
    Only(Vec<String>),
    /// Every platform upstream has.
    All(AllPlatforms),
}

/// The word `all` in [`BundlePlatforms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllPlatforms {
    /// `"all"`.
    All,
}

impl BundlePlatforms {
    /// `all`, or the list comma separated, for summaries.
    pub fn describe(p: Option<&BundlePlatforms>) -> String {
        match p {
            Some(BundlePlatforms::Only(l)) => l.join(","),
            Some(BundlePlatforms::All(_)) => "all".into(),
            None => "all (not recorded: an older bundle)".into(),
        }
    }
}

pub(crate) fn blob_entry(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

pub(crate) fn file_entry(upstream_url: &str) -> String {
    format!("files/{}", files::relative_path(upstream_url))
}

/// What an export or import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BundleReport {
    /// How many images it holds.
    pub images: usize,
    /// Distinct blobs in the bundle.
    pub blobs: usize,
    /// Blobs downloaded by this run (the rest were there from an interrupted run).
    pub blobs_fetched: usize,
    /// How many files it holds.
    pub files: usize,
    /// Bundle size in bytes.
    pub bytes: u64,
    /// The parts written (`--split`), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    /// Platforms it holds (see [`BundlePlatforms`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platforms: Option<BundlePlatforms>,
    /// Registry side of an import.
    pub copy: Option<CopyReport>,
    /// Wall time in milliseconds.
    pub millis: u64,
}

/// Outcomes of files, for reports.
pub fn count_copied(outcomes: &[FileOutcome]) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, FileOutcome::Copied(_)))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_without_platforms_still_reads_and_platforms_round_trip() {
        // Written by kprov before bundles recorded their platforms.
        let old: BundleIndex =
            serde_json::from_str(r#"{"version":1,"cluster":"demo","images":[],"files":[]}"#)
                .unwrap();
        assert_eq!(old.platforms, None);
        assert!(BundlePlatforms::describe(None).starts_with("all"));
        for (p, json) in [
            (BundlePlatforms::All(AllPlatforms::All), r#""all""#),
            (
                BundlePlatforms::Only(vec!["linux/arm64".into()]),
                r#"["linux/arm64"]"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&p).unwrap(), json);
            assert_eq!(serde_json::from_str::<BundlePlatforms>(json).unwrap(), p);
        }
    }
}
