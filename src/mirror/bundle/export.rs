//! Writing a bundle: resolve the images, stage manifests, blobs and files in `FILE.partial/`,
//! then tar it (whole, or in parts with `--split`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use super::parts::{self, SplitWriter};
use super::{blob_entry, file_entry, BundleBlob, BundleFile, BundleImage, BundleIndex};
use super::{AllPlatforms, BundlePlatforms, BundleReport, FORMAT_VERSION, INDEX_ENTRY};
use crate::mirror::catalogue::FileAsset;
use crate::mirror::copy::{self, CopyJob, CopyOptions, Descriptor, ImagePlan, VerifyStream};
use crate::mirror::files;
use crate::mirror::registry::{RawManifest, RegistryClient, OCI_INDEX};
use crate::mirror::{ImageRef, MirrorError};
use std::collections::BTreeMap;

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

/// What goes into a bundle and where it is written.
#[derive(Debug, Clone, Copy)]
pub struct ExportRequest<'a> {
    /// The clusters it is made for (informational; empty for an image list).
    pub clusters: &'a [String],
    /// `(upstream reference, where to fetch it)`, each upstream once.
    pub images: &'a [(String, ImageRef)],
    /// The files, fetched from upstream or from `files_from`.
    pub files: &'a [FileAsset],
    /// A file repository base URL to fetch the files from instead of upstream.
    pub files_from: Option<&'a str>,
    /// The bundle file (with `split`, the parts' base name).
    pub out: &'a Path,
    /// Write parts of at most this many bytes plus `OUT.SHA256SUMS` instead of one file.
    pub split: Option<u64>,
}

/// Write a bundle. The platforms it holds are `opts.platforms` (recorded in its index).
pub async fn export(
    client: &RegistryClient,
    req: &ExportRequest<'_>,
    opts: &CopyOptions,
) -> Result<BundleReport, MirrorError> {
    let started = Instant::now();
    let out = req.out;
    let staging = PathBuf::from(format!("{}.partial", out.display()));
    let blobs_dir = staging.join("blobs/sha256");
    tokio::fs::create_dir_all(&blobs_dir)
        .await
        .map_err(|e| MirrorError::io(blobs_dir.display(), e))?;
    let plans = resolve_images(client, req.images, opts).await?;
    let (mut index, unique) = stage_manifests(&plans, &staging).await?;
    index.cluster = (!req.clusters.is_empty()).then(|| req.clusters.join(","));
    index.platforms = Some(match &opts.platforms {
        Some(f) => BundlePlatforms::Only(f.0.clone()),
        None => BundlePlatforms::All(AllPlatforms::All),
    });
    let fetched = fetch_blobs(client, &unique, &staging, opts).await?;
    index.files = stage_files(client, req.files, req.files_from, &staging).await?;
    write_layout(&index, &staging).await?;
    let (bytes, parts) = write_tar(&index, &unique, &staging, out, req.split).await?;
    let _ = tokio::fs::remove_dir_all(&staging).await;
    Ok(BundleReport {
        images: index.images.len(),
        blobs: unique.len(),
        blobs_fetched: fetched,
        files: index.files.len(),
        bytes,
        parts: parts.iter().map(|p| p.display().to_string()).collect(),
        platforms: index.platforms.clone(),
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
    // An image pinned by digest keeps every platform: a filtered (rewritten) index would no
    // longer have the digest it is pulled by.
    let unfiltered = CopyOptions {
        platforms: None,
        ..opts.clone()
    };
    let unfiltered = &unfiltered;
    futures::stream::iter(images.iter())
        .map(|(up, src)| async move {
            let job = CopyJob {
                source: src.clone(),
                target: src.clone(),
            };
            let pinned =
                src.digest.is_some() || ImageRef::parse(up).is_ok_and(|r| r.digest.is_some());
            let o = if pinned { unfiltered } else { opts };
            // Without target checks every image resolves to a plan.
            let plan = match copy::resolve(client, &job, o, false).await? {
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
    plans: &[(String, ImagePlan)],
    staging: &Path,
) -> Result<(BundleIndex, UniqueBlobs), MirrorError> {
    let mut index = BundleIndex {
        version: FORMAT_VERSION,
        cluster: None,
        platforms: None,
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

/// Tar the staging directory into `out` (through a temporary file, synced, then renamed), or
/// with `split` into `OUT.part-NNNN` + `OUT.SHA256SUMS` (the list written last); returns the
/// bundle's size and the parts.
async fn write_tar(
    index: &BundleIndex,
    unique: &UniqueBlobs,
    staging: &Path,
    out: &Path,
    split: Option<u64>,
) -> Result<(u64, Vec<PathBuf>), MirrorError> {
    // The index first, so an import knows the plan before reading blobs.
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
    let out = out.to_path_buf();
    let staging = staging.to_path_buf();
    tokio::task::spawn_blocking(move || match split {
        Some(size) => write_split(&entries, &staging, &out, size),
        None => write_whole(&entries, &staging, &out).map(|n| (n, Vec::new())),
    })
    .await
    .map_err(|e| MirrorError::Usage(format!("bundle writer: {e}")))?
}

fn append_all<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    entries: &[String],
    staging: &Path,
) -> Result<(), MirrorError> {
    b.mode(tar::HeaderMode::Deterministic);
    for e in entries {
        b.append_path_with_name(staging.join(e), e)
            .map_err(|err| MirrorError::io(staging.join(e).display(), err))?;
    }
    Ok(())
}

fn write_whole(entries: &[String], staging: &Path, out: &Path) -> Result<u64, MirrorError> {
    let tmp = PathBuf::from(format!("{}.tmp", out.display()));
    let f = std::fs::File::create(&tmp).map_err(|e| MirrorError::io(tmp.display(), e))?;
    let mut b = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, f));
    append_all(&mut b, entries, staging)?;
    let w = b
        .into_inner()
        .map_err(|e| MirrorError::io(tmp.display(), e))?;
    w.into_inner()
        .map_err(|e| MirrorError::io(tmp.display(), e.into_error()))?
        .sync_all()
        .map_err(|e| MirrorError::io(tmp.display(), e))?;
    std::fs::rename(&tmp, out).map_err(|e| MirrorError::io(out.display(), e))?;
    // A split bundle of the same name from an earlier run would shadow nothing, but would
    // confuse whoever copies the directory: remove it.
    parts::remove_split(out)?;
    Ok(std::fs::metadata(out).map(|m| m.len()).unwrap_or(0))
}

fn write_split(
    entries: &[String],
    staging: &Path,
    out: &Path,
    size: u64,
) -> Result<(u64, Vec<PathBuf>), MirrorError> {
    let w = SplitWriter::new(out, size)?;
    let mut b = tar::Builder::new(w);
    append_all(&mut b, entries, staging)?;
    let w = b
        .into_inner()
        .map_err(|e| MirrorError::io(out.display(), e))?;
    let parts = w.finish()?;
    // A whole bundle of the same name from an earlier run would be read instead of the parts.
    match std::fs::remove_file(out) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(MirrorError::io(out.display(), e))
        }
        _ => {}
    }
    let total = parts
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    Ok((total, parts))
}
