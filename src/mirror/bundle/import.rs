//! Loading a bundle into a registry (and its files into a file target).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{blob_entry, BundleReport, OpenBundle, INDEX_ENTRY};
use crate::mirror::catalogue::FileAsset;
use crate::mirror::copy::{
    self, BlobSource, CopyJob, CopyOptions, CopyReport, Descriptor, ImagePlan,
};
use crate::mirror::files::{self, FileTarget};
use crate::mirror::registry::RegistryClient;
use crate::mirror::{ImageRef, MirrorError};

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
        tokio::task::spawn_blocking(move || OpenBundle::open_verified(&p))
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
        let (offset, size) = b.entries[&entry];
        BlobSource::Bundle {
            path: b.path.clone(),
            segments: b.parts.segments(offset, size),
            entry,
        }
    };
    copy::execute(client, &plans, &source, opts, &mut report).await?;
    report.millis = started.elapsed().as_millis() as u64;
    let nfiles = match files_to {
        Some(target) => upload_files(client, &b, target).await?,
        None => 0,
    };
    Ok(BundleReport {
        images: b.index.images.len(),
        blobs: b.entries.keys().filter(|k| k.starts_with("blobs/")).count(),
        blobs_fetched: report.blobs_copied,
        files: nfiles,
        bytes: b.parts.total(),
        parts: Vec::new(),
        platforms: b.index.platforms.clone(),
        copy: Some(report),
        millis: started.elapsed().as_millis() as u64,
    })
}

/// Upload the bundle's files the target lacks (each extracted and SHA-256 checked first);
/// returns how many were uploaded.
async fn upload_files(
    client: &RegistryClient,
    b: &OpenBundle,
    target: &FileTarget,
) -> Result<usize, MirrorError> {
    let staging = PathBuf::from(format!("{}.files.partial", b.path.display()));
    let mut nfiles = 0;
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
    Ok(nfiles)
}
