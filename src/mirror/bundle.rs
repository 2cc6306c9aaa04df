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
//! it at the end, so an interrupted export resumes; import skips what the target already has,
//! so an interrupted import resumes too. A corrupted bundle is rejected naming the bad entry.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::catalogue::FileAsset;
use super::copy::{
    self, BlobSource, CopyJob, CopyOptions, CopyReport, Descriptor, ImagePlan, VerifyStream,
};
use super::files::{self, FileOutcome, FileTarget};
use super::registry::{RawManifest, RegistryClient, OCI_INDEX};
use super::{sha256_digest, ImageRef, MirrorError};
use crate::spec::Arch;

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
    /// Cluster it was made for (informational).
    #[serde(default)]
    pub cluster: Option<String>,
    /// The images it holds.
    pub images: Vec<BundleImage>,
    /// The files it holds.
    pub files: Vec<BundleFile>,
}

fn blob_entry(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn file_entry(upstream_url: &str) -> String {
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
    /// Registry side of an import.
    pub copy: Option<CopyReport>,
    /// Wall time in milliseconds.
    pub millis: u64,
}

async fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MirrorError> {
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, bytes)
        .await
        .map_err(|e| MirrorError::io(tmp.display(), e))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| MirrorError::io(path.display(), e))
}

/// Download one blob into `dest` through the verifying stream; renamed into place only when
/// its digest and size are right.
async fn fetch_blob(
    client: &RegistryClient,
    source: &ImageRef,
    d: &Descriptor,
    dest: &Path,
    progress: &crate::report::Phase,
) -> Result<(), MirrorError> {
    let what = format!("blob {} of {source}", d.digest);
    client
        .retry(&what, || async {
            let resp = client
                .get_blob(&source.registry, &source.repository, &d.digest)
                .await?;
            let (mut verify, slot) = VerifyStream::new(
                resp.bytes_stream(),
                &d.digest,
                d.size,
                what.clone(),
                Some(progress.clone()),
            );
            let tmp = dest.with_extension("partial");
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| MirrorError::io(tmp.display(), e))?;
            while let Some(chunk) = verify.next().await {
                match chunk {
                    Ok(c) => f
                        .write_all(&c)
                        .await
                        .map_err(|e| MirrorError::io(tmp.display(), e))?,
                    Err(_) => {
                        drop(f);
                        let _ = tokio::fs::remove_file(&tmp).await;
                        let e = slot.lock().expect("slot").take();
                        return Err(e.unwrap_or_else(|| {
                            MirrorError::Usage(format!("{what}: stream failed"))
                        }));
                    }
                }
            }
            f.flush()
                .await
                .map_err(|e| MirrorError::io(tmp.display(), e))?;
            drop(f);
            tokio::fs::rename(&tmp, dest)
                .await
                .map_err(|e| MirrorError::io(dest.display(), e))
        })
        .await
}

/// Write a bundle of `images` (`(upstream reference, where to fetch it)`) and `files` (fetched
/// from upstream or from `files_from`, a file repository base URL) to `out`.
pub async fn export(
    client: &RegistryClient,
    cluster: Option<&str>,
    images: &[(String, ImageRef)],
    file_assets: &[FileAsset],
    files_from: Option<&str>,
    out: &Path,
    opts: &CopyOptions,
) -> Result<BundleReport, MirrorError> {
    let started = Instant::now();
    let staging = PathBuf::from(format!("{}.partial", out.display()));
    let blobs_dir = staging.join("blobs/sha256");
    tokio::fs::create_dir_all(&blobs_dir)
        .await
        .map_err(|e| MirrorError::io(blobs_dir.display(), e))?;
    let plans = resolve_images(client, images, opts).await?;
    let (mut index, unique) = stage_manifests(cluster, &plans, &staging).await?;
    let fetched = fetch_blobs(client, &unique, &staging, opts).await?;
    index.files = stage_files(client, file_assets, files_from, &staging).await?;
    write_layout(&index, &staging).await?;
    let bytes = write_tar(&index, &unique, &staging, out).await?;
    let _ = tokio::fs::remove_dir_all(&staging).await;
    Ok(BundleReport {
        images: index.images.len(),
        blobs: unique.len(),
        blobs_fetched: fetched,
        files: index.files.len(),
        bytes,
        copy: None,
        millis: started.elapsed().as_millis() as u64,
    })
}

/// Unique blobs of a bundle: digest → (an image that has it, its descriptor).
type UniqueBlobs = BTreeMap<String, (ImageRef, Descriptor)>;

/// Resolve every image (manifests are small; fetched every time so a changed tag is seen).
async fn resolve_images(
    client: &RegistryClient,
    images: &[(String, ImageRef)],
    opts: &CopyOptions,
) -> Result<Vec<(String, ImagePlan)>, MirrorError> {
    let conc = opts.concurrency.max(1);
    futures::stream::iter(images.iter())
        .map(|(up, src)| async move {
            let job = CopyJob {
                source: src.clone(),
                target: src.clone(),
            };
            // Without target checks every image resolves to a plan.
            let plan = match copy::resolve(client, &job, opts, false).await? {
                copy::Resolved::Plan(p) => *p,
                copy::Resolved::UpToDate(_) => {
                    return Err(MirrorError::Usage(format!("{up}: nothing to export")))
                }
            };
            Ok::<_, MirrorError>((up.clone(), plan))
        })
        .buffered(conc)
        .try_collect()
        .await
}

/// Write every manifest into the staging directory and index the images; returns the index
/// (files still empty) and the unique blobs the images need.
async fn stage_manifests(
    cluster: Option<&str>,
    plans: &[(String, ImagePlan)],
    staging: &Path,
) -> Result<(BundleIndex, UniqueBlobs), MirrorError> {
    let mut index = BundleIndex {
        version: FORMAT_VERSION,
        cluster: cluster.map(str::to_string),
        images: Vec::new(),
        files: Vec::new(),
    };
    let mut unique: UniqueBlobs = BTreeMap::new();
    for (up, p) in plans {
        for m in p.children.iter().chain(std::iter::once(&p.top)) {
            write_atomic(&staging.join(blob_entry(&m.digest)), &m.bytes).await?;
        }
        for b in &p.blobs {
            unique
                .entry(b.digest.clone())
                .or_insert((p.job.source.clone(), b.clone()));
        }
        let blob = |m: &RawManifest| BundleBlob {
            digest: m.digest.clone(),
            size: m.bytes.len() as u64,
            media_type: Some(m.media_type.clone()),
        };
        index.images.push(BundleImage {
            upstream: up.clone(),
            manifest: blob(&p.top),
            children: p.children.iter().map(blob).collect(),
            blobs: p
                .blobs
                .iter()
                .map(|b| BundleBlob {
                    digest: b.digest.clone(),
                    size: b.size,
                    media_type: None,
                })
                .collect(),
        });
    }
    Ok((index, unique))
}

/// Fetch the blobs not yet staged (a re-run after an interruption resumes); returns how many
/// were fetched.
async fn fetch_blobs(
    client: &RegistryClient,
    unique: &UniqueBlobs,
    staging: &Path,
    opts: &CopyOptions,
) -> Result<usize, MirrorError> {
    let conc = opts.concurrency.max(1);
    let todo: Vec<&(ImageRef, Descriptor)> = unique
        .values()
        .filter(|(_, d)| {
            std::fs::metadata(staging.join(blob_entry(&d.digest)))
                .map(|m| m.len())
                .ok()
                != Some(d.size)
        })
        .collect();
    let total = todo.iter().map(|(_, d)| d.size).sum();
    let progress = opts.progress.bytes("bundle", total);
    let fetched = todo.len();
    let res: Result<Vec<()>, MirrorError> = futures::stream::iter(todo)
        .map(|(src, d)| {
            let dest = staging.join(blob_entry(&d.digest));
            let progress = progress.clone();
            async move { fetch_blob(client, src, d, &dest, &progress).await }
        })
        .buffer_unordered(conc)
        .try_collect()
        .await;
    progress.clear();
    res?;
    Ok(fetched)
}

/// Stage the files (downloaded unless already staged, SHA-256 checked) and index them.
async fn stage_files(
    client: &RegistryClient,
    file_assets: &[FileAsset],
    files_from: Option<&str>,
    staging: &Path,
) -> Result<Vec<BundleFile>, MirrorError> {
    let mut indexed = Vec::new();
    for f in file_assets {
        let entry = file_entry(&f.upstream_url);
        let dest = staging.join(&entry);
        let have = std::fs::metadata(&dest).is_ok();
        if !have {
            let src = match files_from {
                Some(b) => files::base_url(b, &f.upstream_url),
                None => f.upstream_url.clone(),
            };
            files::download(client.http(), &src, &f.sha256, &dest).await?;
        }
        let size = std::fs::metadata(&dest)
            .map_err(|e| MirrorError::io(dest.display(), e))?
            .len();
        indexed.push(BundleFile {
            name: f.name.clone(),
            upstream_url: f.upstream_url.clone(),
            sha256: f.sha256.clone(),
            arch: f.arch,
            size,
            entry,
        });
    }
    Ok(indexed)
}

/// Write the OCI layout files and kprov's own index into the staging directory.
async fn write_layout(index: &BundleIndex, staging: &Path) -> Result<(), MirrorError> {
    // OCI layout files.
    let oci_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": index.images.iter().map(|i| serde_json::json!({
            "mediaType": i.manifest.media_type,
            "digest": i.manifest.digest,
            "size": i.manifest.size,
            "annotations": {
                "org.opencontainers.image.ref.name": i.upstream,
                "io.kprov.upstream": i.upstream,
            }
        })).collect::<Vec<_>>(),
    });
    write_atomic(
        &staging.join("index.json"),
        &serde_json::to_vec_pretty(&oci_index).expect("json"),
    )
    .await?;
    write_atomic(
        &staging.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .await?;
    let index_bytes = serde_json::to_vec_pretty(index).expect("json");
    write_atomic(&staging.join(INDEX_ENTRY), &index_bytes).await?;
    Ok(())
}

/// Tar the staging directory into `out` (through a temporary file, synced, then renamed);
/// returns the bundle's size.
async fn write_tar(
    index: &BundleIndex,
    unique: &UniqueBlobs,
    staging: &Path,
    out: &Path,
) -> Result<u64, MirrorError> {
    // Tar it: the index first, so an import knows the plan before reading blobs.
    let out_path = out.to_path_buf();
    let staging2 = staging.to_path_buf();
    let mut entries: Vec<String> =
        vec![INDEX_ENTRY.into(), "oci-layout".into(), "index.json".into()];
    let mut blob_names: Vec<String> = unique.keys().map(|d| blob_entry(d)).collect();
    for i in &index.images {
        blob_names.push(blob_entry(&i.manifest.digest));
        blob_names.extend(i.children.iter().map(|c| blob_entry(&c.digest)));
    }
    blob_names.sort();
    blob_names.dedup();
    entries.extend(blob_names);
    entries.extend(index.files.iter().map(|f| f.entry.clone()));
    tokio::task::spawn_blocking(move || -> Result<u64, MirrorError> {
        let tmp = PathBuf::from(format!("{}.tmp", out_path.display()));
        let f = std::fs::File::create(&tmp).map_err(|e| MirrorError::io(tmp.display(), e))?;
        let mut b = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, f));
        b.mode(tar::HeaderMode::Deterministic);
        for e in &entries {
            b.append_path_with_name(staging2.join(e), e)
                .map_err(|err| MirrorError::io(staging2.join(e).display(), err))?;
        }
        let w = b
            .into_inner()
            .map_err(|e| MirrorError::io(tmp.display(), e))?;
        w.into_inner()
            .map_err(|e| MirrorError::io(tmp.display(), e.into_error()))?
            .sync_all()
            .map_err(|e| MirrorError::io(tmp.display(), e))?;
        std::fs::rename(&tmp, &out_path).map_err(|e| MirrorError::io(out_path.display(), e))?;
        Ok(std::fs::metadata(&out_path).map(|m| m.len()).unwrap_or(0))
    })
    .await
    .map_err(|e| MirrorError::Usage(format!("bundle writer: {e}")))?
}

/// An opened bundle: its index and where each entry's data is.
#[derive(Debug)]
pub struct OpenBundle {
    /// The file.
    pub path: PathBuf,
    /// `kprov-bundle.json`.
    pub index: BundleIndex,
    /// Entry name → (data offset, size).
    pub entries: BTreeMap<String, (u64, u64)>,
}

impl OpenBundle {
    fn err(&self, entry: &str, problem: impl Into<String>) -> MirrorError {
        MirrorError::Bundle {
            bundle: self.path.display().to_string(),
            entry: entry.to_string(),
            problem: problem.into(),
        }
    }

    /// Open and check the structure: every entry the index names is there with its size.
    pub fn open(path: &Path) -> Result<OpenBundle, MirrorError> {
        let bad = |entry: &str, problem: String| MirrorError::Bundle {
            bundle: path.display().to_string(),
            entry: entry.to_string(),
            problem,
        };
        let f = std::fs::File::open(path).map_err(|e| MirrorError::io(path.display(), e))?;
        let mut ar = tar::Archive::new(f);
        let mut entries = BTreeMap::new();
        let mut index_bytes = None;
        for e in ar
            .entries()
            .map_err(|e| bad("(tar header)", e.to_string()))?
        {
            let mut e = e.map_err(|e| bad("(tar header)", e.to_string()))?;
            let name = e
                .path()
                .map_err(|err| bad("(tar header)", err.to_string()))?
                .to_string_lossy()
                .into_owned();
            let size = e.size();
            entries.insert(name.clone(), (e.raw_file_position(), size));
            if name == INDEX_ENTRY {
                let mut v = Vec::new();
                e.read_to_end(&mut v)
                    .map_err(|err| bad(INDEX_ENTRY, err.to_string()))?;
                index_bytes = Some(v);
            }
        }
        let index_bytes =
            index_bytes.ok_or_else(|| bad(INDEX_ENTRY, "missing: not a kprov bundle".into()))?;
        let index: BundleIndex = serde_json::from_slice(&index_bytes)
            .map_err(|e| bad(INDEX_ENTRY, format!("not valid: {e}")))?;
        if index.version != FORMAT_VERSION {
            return Err(bad(
                INDEX_ENTRY,
                format!(
                    "format version {} is not {FORMAT_VERSION}; use the kprov that wrote it",
                    index.version
                ),
            ));
        }
        let b = OpenBundle {
            path: path.to_path_buf(),
            index,
            entries,
        };
        for i in &b.index.images {
            for blob in std::iter::once(&i.manifest)
                .chain(&i.children)
                .chain(&i.blobs)
            {
                let entry = blob_entry(&blob.digest);
                match b.entries.get(&entry) {
                    None => {
                        return Err(b.err(&entry, format!("missing (needed by {})", i.upstream)))
                    }
                    Some((_, size)) if *size != blob.size => {
                        return Err(b.err(&entry, format!("{size} bytes, expected {}", blob.size)))
                    }
                    _ => {}
                }
            }
        }
        for f in &b.index.files {
            // Import extracts each file to `STAGING/ENTRY`: an absolute or `..` entry would
            // write outside the staging directory.
            let relative = Path::new(&f.entry)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !relative || f.entry.is_empty() {
                return Err(b.err(
                    &f.entry,
                    format!("file {:?}: not a relative path inside the bundle", f.name),
                ));
            }
            match b.entries.get(&f.entry) {
                None => return Err(b.err(&f.entry, "missing")),
                Some((_, size)) if *size != f.size => {
                    return Err(b.err(&f.entry, format!("{size} bytes, expected {}", f.size)))
                }
                _ => {}
            }
        }
        Ok(b)
    }

    /// Open the bundle and read every manifest, checking its digest: what an import reads
    /// before it contacts the registry (`kprov mirror --from-bundle FILE --dry-run`).
    pub fn check(path: &Path) -> Result<OpenBundle, MirrorError> {
        let b = OpenBundle::open(path)?;
        for i in &b.index.images {
            ImageRef::parse(&i.upstream)
                .map_err(|e| b.err(INDEX_ENTRY, format!("images[].upstream: {e}")))?;
            for m in std::iter::once(&i.manifest).chain(&i.children) {
                b.read_manifest(m)?;
            }
        }
        Ok(b)
    }

    /// Read a small entry (a manifest) and check its digest.
    pub fn read_manifest(&self, blob: &BundleBlob) -> Result<RawManifest, MirrorError> {
        let entry = blob_entry(&blob.digest);
        let (off, size) = self.entries[&entry];
        if size as usize > super::registry::MAX_MANIFEST_BYTES {
            return Err(self.err(&entry, "manifest too large"));
        }
        let mut f =
            std::fs::File::open(&self.path).map_err(|e| MirrorError::io(self.path.display(), e))?;
        f.seek(SeekFrom::Start(off))
            .map_err(|e| MirrorError::io(self.path.display(), e))?;
        let mut bytes = vec![0u8; size as usize];
        f.read_exact(&mut bytes)
            .map_err(|e| self.err(&entry, e.to_string()))?;
        let digest = sha256_digest(&bytes);
        if digest != blob.digest {
            return Err(self.err(
                &entry,
                format!("content hashes to {digest}, expected {}", blob.digest),
            ));
        }
        Ok(RawManifest {
            media_type: blob
                .media_type
                .clone()
                .or_else(|| copy::media_type_of(&bytes))
                .unwrap_or_default(),
            bytes,
            digest,
        })
    }

    /// Extract a file entry to `dest`, checking its SHA-256.
    pub fn extract_file(&self, f: &BundleFile, dest: &Path) -> Result<(), MirrorError> {
        use sha2::{Digest, Sha256};
        let (off, size) = self.entries[&f.entry];
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).map_err(|e| MirrorError::io(p.display(), e))?;
        }
        let mut src =
            std::fs::File::open(&self.path).map_err(|e| MirrorError::io(self.path.display(), e))?;
        src.seek(SeekFrom::Start(off))
            .map_err(|e| MirrorError::io(self.path.display(), e))?;
        let mut src = src.take(size);
        let mut out =
            std::fs::File::create(dest).map_err(|e| MirrorError::io(dest.display(), e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = src
                .read(&mut buf)
                .map_err(|e| self.err(&f.entry, e.to_string()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            std::io::Write::write_all(&mut out, &buf[..n])
                .map_err(|e| MirrorError::io(dest.display(), e))?;
        }
        let actual = hex::encode(h.finalize());
        if actual != f.sha256 {
            let _ = std::fs::remove_file(dest);
            return Err(self.err(
                &f.entry,
                format!(
                    "content hashes to sha256:{actual}, expected sha256:{}",
                    f.sha256
                ),
            ));
        }
        Ok(())
    }
}

/// Load a bundle into a registry: each image goes to `target_of(upstream)` (the caller computes
/// it with the asset mapping), files to `files_to`.
pub async fn import(
    client: &RegistryClient,
    bundle: &Path,
    target_of: &(dyn Fn(&str) -> Result<ImageRef, MirrorError> + Sync),
    files_to: Option<&FileTarget>,
    opts: &CopyOptions,
) -> Result<BundleReport, MirrorError> {
    let started = Instant::now();
    let b = {
        let p = bundle.to_path_buf();
        tokio::task::spawn_blocking(move || OpenBundle::open(&p))
            .await
            .map_err(|e| MirrorError::Usage(format!("bundle reader: {e}")))??
    };
    let mut report = CopyReport {
        images: b.index.images.len(),
        ..Default::default()
    };
    // Every name first: one a registry would refuse stops the import before any request.
    let names = b
        .index
        .images
        .iter()
        .map(|i| {
            let up = ImageRef::parse(&i.upstream)
                .map_err(|e| b.err(INDEX_ENTRY, format!("images[].upstream: {e}")))?;
            Ok((up, target_of(&i.upstream)?))
        })
        .collect::<Result<Vec<_>, MirrorError>>()?;
    let mut plans = Vec::new();
    for (i, (up, target)) in b.index.images.iter().zip(names) {
        let top = b.read_manifest(&i.manifest)?;
        if client
            .head_manifest(&target)
            .await?
            .and_then(|h| h.digest)
            .as_deref()
            == Some(top.digest.as_str())
        {
            report.images_up_to_date += 1;
            report
                .digests
                .insert(target.to_string(), top.digest.clone());
            continue;
        }
        let mut children = Vec::new();
        let mut present = 0;
        for c in &i.children {
            let m = b.read_manifest(c)?;
            if client
                .head_manifest(&target.with_reference(None, Some(c.digest.clone())))
                .await?
                .is_some()
            {
                present += 1;
            } else {
                children.push(m);
            }
        }
        plans.push(ImagePlan {
            job: CopyJob { source: up, target },
            children,
            top,
            blobs: i
                .blobs
                .iter()
                .map(|x| Descriptor {
                    media_type: None,
                    digest: x.digest.clone(),
                    size: x.size,
                    platform: None,
                    urls: None,
                })
                .collect(),
            manifests_present: present,
        });
    }
    let source = |_: &ImagePlan, d: &Descriptor| {
        let entry = blob_entry(&d.digest);
        BlobSource::Bundle {
            path: b.path.clone(),
            offset: b.entries[&entry].0,
            entry,
        }
    };
    copy::execute(client, &plans, &source, opts, &mut report).await?;
    report.millis = started.elapsed().as_millis() as u64;
    let mut nfiles = 0;
    if let Some(target) = files_to {
        let staging = PathBuf::from(format!("{}.files.partial", bundle.display()));
        for f in &b.index.files {
            let asset = FileAsset {
                name: f.name.clone(),
                upstream_url: f.upstream_url.clone(),
                mirror_url: target.location(&f.upstream_url),
                sha256: f.sha256.clone(),
                arch: f.arch,
            };
            if files::present(client.http(), target, &asset).await? {
                continue;
            }
            let local = staging.join(&f.entry);
            b.extract_file(f, &local)?;
            files::upload(client.http(), target, &asset, &local).await?;
            nfiles += 1;
        }
        let _ = tokio::fs::remove_dir_all(&staging).await;
    }
    Ok(BundleReport {
        images: b.index.images.len(),
        blobs: b.entries.keys().filter(|k| k.starts_with("blobs/")).count(),
        blobs_fetched: report.blobs_copied,
        files: nfiles,
        bytes: std::fs::metadata(bundle).map(|m| m.len()).unwrap_or(0),
        copy: Some(report),
        millis: started.elapsed().as_millis() as u64,
    })
}

/// Outcomes of files, for reports.
pub fn count_copied(outcomes: &[FileOutcome]) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, FileOutcome::Copied(_)))
        .count()
}
