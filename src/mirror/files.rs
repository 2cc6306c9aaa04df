//! Files (Kubernetes binaries, CNI plugins): downloaded with SHA-256 checked, uploaded to an S3
//! bucket, a directory or an HTTP PUT target, under `HOST/PATH` of the upstream URL — the layout
//! `assets.fileRepository` expects ([`crate::assets::file_url`]).
//!
//! A file is first downloaded into a staging file next to nothing else, hashed while it is
//! written, and only uploaded when the hash matches; a target that already holds the file with
//! the right SHA-256 is skipped (a re-run after an interruption only does what is missing).

use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::catalogue::FileAsset;
use super::MirrorError;
use crate::assets;
use crate::spec::Assets;

/// Where files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileTarget {
    /// `s3://BUCKET[/PREFIX]` (credentials and endpoint as for the S3 state store).
    S3(String),
    /// `file:///DIR`.
    Dir(PathBuf),
    /// `http(s)://BASE`, written with `PUT BASE/HOST/PATH`.
    Http(String),
}

impl FileTarget {
    /// Parse `s3://…`, `file://…` or `http(s)://…`.
    pub fn parse(s: &str) -> Result<FileTarget, MirrorError> {
        if s.starts_with("s3://") {
            Ok(FileTarget::S3(s.trim_end_matches('/').to_string()))
        } else if let Some(p) = s.strip_prefix("file://") {
            Ok(FileTarget::Dir(PathBuf::from(p)))
        } else if s.starts_with("http://") || s.starts_with("https://") {
            Ok(FileTarget::Http(s.trim_end_matches('/').to_string()))
        } else {
            Err(MirrorError::Usage(format!(
                "--files-to {s:?}: use s3://BUCKET[/PREFIX], file:///DIR or https://HOST/PATH"
            )))
        }
    }

    /// Human-readable location of one file at this target.
    pub fn location(&self, upstream_url: &str) -> String {
        match self {
            FileTarget::S3(base) | FileTarget::Http(base) => base_url(base, upstream_url),
            FileTarget::Dir(d) => d.join(relative_path(upstream_url)).display().to_string(),
        }
    }
}

/// `HOST/PATH` of an upstream URL: where a file lives under a file repository.
pub fn relative_path(upstream_url: &str) -> String {
    upstream_url
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(upstream_url)
        .trim_start_matches('/')
        .to_string()
}

/// `BASE/HOST/PATH`, computed with [`crate::assets::file_url`] so that it is exactly what nodes
/// download from a file repository at `BASE`.
pub fn base_url(base: &str, upstream_url: &str) -> String {
    let a = Assets {
        file_repository: Some(base.to_string()),
        ..Default::default()
    };
    assets::file_url(upstream_url, &a)
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutcome {
    /// Copied to the target: this many bytes.
    Copied(u64),
    /// Already at the target with the right SHA-256.
    Present,
}

async fn hash_file(path: &Path) -> Result<Option<(String, u64)>, MirrorError> {
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MirrorError::io(path.display(), e)),
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        use tokio::io::AsyncReadExt;
        let k = f
            .read(&mut buf)
            .await
            .map_err(|e| MirrorError::io(path.display(), e))?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok(Some((hex::encode(h.finalize()), n)))
}

/// Download `url` into `dest`, checking SHA-256 `sha256` on the way; `dest` only appears (by
/// rename) when the hash matched.
pub async fn download(
    http: &reqwest::Client,
    url: &str,
    sha256: &str,
    dest: &Path,
) -> Result<u64, MirrorError> {
    let file_err = |message: String| MirrorError::File {
        url: url.to_string(),
        message,
    };
    if let Some(p) = dest.parent() {
        tokio::fs::create_dir_all(p)
            .await
            .map_err(|e| MirrorError::io(p.display(), e))?;
    }
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| file_err(format!("download failed: {e}")))?;
    if !resp.status().is_success() {
        return Err(file_err(format!(
            "download failed: HTTP {}; check the URL and --files-from",
            resp.status().as_u16()
        )));
    }
    let tmp = dest.with_extension("kprov-partial");
    let mut out = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| MirrorError::io(tmp.display(), e))?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| file_err(format!("download cut after {n} bytes: {e}")))?;
        h.update(&chunk);
        n += chunk.len() as u64;
        out.write_all(&chunk)
            .await
            .map_err(|e| MirrorError::io(tmp.display(), e))?;
    }
    out.flush()
        .await
        .map_err(|e| MirrorError::io(tmp.display(), e))?;
    drop(out);
    let actual = hex::encode(h.finalize());
    if actual != sha256 {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(MirrorError::DigestMismatch {
            what: format!("file {url}"),
            expected: format!("sha256:{sha256}"),
            actual: format!("sha256:{actual}"),
        });
    }
    tokio::fs::rename(&tmp, dest)
        .await
        .map_err(|e| MirrorError::io(dest.display(), e))?;
    Ok(n)
}

/// Is the file already at the target with this SHA-256?
pub async fn present(
    http: &reqwest::Client,
    target: &FileTarget,
    file: &FileAsset,
) -> Result<bool, MirrorError> {
    match target {
        FileTarget::Dir(d) => {
            let p = d.join(relative_path(&file.upstream_url));
            Ok(hash_file(&p).await?.is_some_and(|(h, _)| h == file.sha256))
        }
        FileTarget::Http(base) => {
            let url = base_url(base, &file.upstream_url);
            let Ok(resp) = http.get(&url).send().await else {
                return Ok(false);
            };
            if !resp.status().is_success() {
                return Ok(false);
            }
            let mut h = Sha256::new();
            let mut body = resp.bytes_stream();
            while let Some(c) = body.next().await {
                match c {
                    Ok(c) => h.update(&c),
                    Err(_) => return Ok(false),
                }
            }
            Ok(hex::encode(h.finalize()) == file.sha256)
        }
        FileTarget::S3(url) => {
            let (client, bucket, key) = s3_location(url, &file.upstream_url).await?;
            match client.head_object().bucket(&bucket).key(&key).send().await {
                Ok(o) => Ok(o
                    .metadata()
                    .and_then(|m| m.get("sha256"))
                    .is_some_and(|s| *s == file.sha256)),
                Err(_) => Ok(false),
            }
        }
    }
}

async fn s3_location(
    url: &str,
    upstream_url: &str,
) -> Result<(aws_sdk_s3::Client, String, String), MirrorError> {
    let opts =
        kprov_state::s3::S3Options::from_env().map_err(|e| MirrorError::Usage(e.to_string()))?;
    let usage = |e: kprov_state::StateError| MirrorError::Usage(e.to_string());
    let parsed = kprov_state::s3::S3Url::parse(url).map_err(usage)?;
    let client = kprov_state::s3::s3_client(&opts).await.map_err(usage)?;
    let key = parsed.object_key(&relative_path(upstream_url));
    Ok((client, parsed.bucket, key))
}

/// The error of a write `target` refused (`status`, 0 without one), naming what was done to
/// which file.
fn write_refused<'a>(
    target: &'a FileTarget,
    file: &'a FileAsset,
    doing: &'a str,
) -> impl Fn(u16, String) -> MirrorError + 'a {
    move |status, message| MirrorError::WriteRefused {
        target: target.location(&file.upstream_url),
        what: format!("{doing} {}", file.upstream_url),
        status,
        message,
    }
}

/// Upload a verified local file to the target.
pub async fn upload(
    http: &reqwest::Client,
    target: &FileTarget,
    file: &FileAsset,
    local: &Path,
) -> Result<(), MirrorError> {
    let refused = write_refused(target, file, "file");
    match target {
        FileTarget::Dir(d) => {
            let dest = d.join(relative_path(&file.upstream_url));
            if let Some(p) = dest.parent() {
                tokio::fs::create_dir_all(p)
                    .await
                    .map_err(|e| refused(0, format!("{}: {e}", p.display())))?;
            }
            let tmp = dest.with_extension("kprov-partial");
            tokio::fs::copy(local, &tmp)
                .await
                .map_err(|e| refused(0, format!("{}: {e}", tmp.display())))?;
            tokio::fs::rename(&tmp, &dest)
                .await
                .map_err(|e| refused(0, format!("{}: {e}", dest.display())))?;
            Ok(())
        }
        FileTarget::Http(base) => {
            let url = base_url(base, &file.upstream_url);
            let f = tokio::fs::File::open(local)
                .await
                .map_err(|e| MirrorError::io(local.display(), e))?;
            let len = f
                .metadata()
                .await
                .map_err(|e| MirrorError::io(local.display(), e))?
                .len();
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f));
            let resp = http
                .put(&url)
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(body)
                .send()
                .await
                .map_err(|e| MirrorError::File {
                    url: url.clone(),
                    message: format!("upload failed: {e}"),
                })?;
            if resp.status().is_success() {
                Ok(())
            } else {
                let s = resp.status().as_u16();
                Err(refused(s, resp.text().await.unwrap_or_default()))
            }
        }
        FileTarget::S3(url) => {
            let (client, bucket, key) = s3_location(url, &file.upstream_url).await?;
            let body = aws_sdk_s3::primitives::ByteStream::from_path(local)
                .await
                .map_err(|e| {
                    MirrorError::io(local.display(), std::io::Error::other(e.to_string()))
                })?;
            client
                .put_object()
                .bucket(&bucket)
                .key(&key)
                .metadata("sha256", &file.sha256)
                .body(body)
                .send()
                .await
                .map_err(|e| {
                    refused(0, format!("{}", aws_sdk_s3::error::DisplayErrorContext(e)))
                })?;
            Ok(())
        }
    }
}

/// Remove a file from the target; one already gone is removed.
pub async fn remove(
    http: &reqwest::Client,
    target: &FileTarget,
    file: &FileAsset,
) -> Result<(), MirrorError> {
    let refused = write_refused(target, file, "removing file");
    match target {
        FileTarget::Dir(d) => {
            match tokio::fs::remove_file(d.join(relative_path(&file.upstream_url))).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(refused(0, e.to_string()))
                }
                _ => Ok(()),
            }
        }
        FileTarget::Http(base) => {
            let resp = http
                .delete(base_url(base, &file.upstream_url))
                .send()
                .await
                .map_err(|e| refused(0, e.to_string()))?;
            match resp.status().as_u16() {
                s if resp.status().is_success() || s == 404 => Ok(()),
                s => Err(refused(s, resp.text().await.unwrap_or_default())),
            }
        }
        FileTarget::S3(url) => {
            let (client, bucket, key) = s3_location(url, &file.upstream_url).await?;
            client
                .delete_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| {
                    refused(0, format!("{}", aws_sdk_s3::error::DisplayErrorContext(e)))
                })?;
            Ok(())
        }
    }
}

/// A download error names the file by its upstream URL too (the source may be a mirror).
fn name_upstream(e: MirrorError, f: &FileAsset, src: &str) -> MirrorError {
    if src == f.upstream_url {
        return e;
    }
    match e {
        MirrorError::DigestMismatch {
            expected, actual, ..
        } => MirrorError::DigestMismatch {
            what: format!("file {} (downloaded from {src})", f.upstream_url),
            expected,
            actual,
        },
        MirrorError::File { url, message } => MirrorError::File {
            url: format!("{} (from {url})", f.upstream_url),
            message,
        },
        other => other,
    }
}

/// Copy files from their upstream (or from `source_base`, a file repository laid out as
/// `BASE/HOST/PATH`) to `target`, verifying SHA-256. `staging` holds downloads until uploaded.
pub async fn mirror_files(
    http: &reqwest::Client,
    files: &[FileAsset],
    source_base: Option<&str>,
    target: &FileTarget,
    staging: &Path,
) -> Result<Vec<FileOutcome>, MirrorError> {
    let mut out = Vec::new();
    for f in files {
        if present(http, target, f).await? {
            out.push(FileOutcome::Present);
            continue;
        }
        let src = match source_base {
            Some(b) => base_url(b, &f.upstream_url),
            None => f.upstream_url.clone(),
        };
        let local = staging.join(relative_path(&f.upstream_url));
        let n = download(http, &src, &f.sha256, &local)
            .await
            .map_err(|e| name_upstream(e, f, &src))?;
        upload(http, target, f, &local).await?;
        let _ = tokio::fs::remove_file(&local).await;
        out.push(FileOutcome::Copied(n));
    }
    Ok(out)
}
