//! The copy engine: images from one registry to another, digests preserved.
//!
//! Order of work, chosen so that an interrupted run (even `kill -9`) leaves nothing a re-run
//! cannot finish: (1) resolve every image (HEAD target and source; equal digests → nothing to
//! do), fetching manifests only for images that differ; (2) copy the blobs, each digest once,
//! then mount it into every other target repository that needs it; (3) push the manifests,
//! platform manifests before their index, so a tag only ever points at a complete image.
//! Everything already present is found by HEAD and skipped, so a re-run resumes where the last
//! stopped (at blob granularity: a half-sent blob is sent again).
//!
//! Manifests are copied as the exact bytes served (an index or Docker manifest list keeps its
//! digest, and with it every `@sha256:` pin). Blobs are streamed GET → PUT with the SHA-256
//! computed on the way; the last bytes are withheld when the digest does not match, so the
//! target never commits a corrupt blob.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use crate::report::{Phase, Progress};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};

use sha2::{Digest, Sha256};

pub use super::manifest::{
    media_type_of, parse_manifest, Descriptor, Parsed, Platform, PlatformFilter,
};
use super::registry::{RawManifest, RegistryClient};
use super::{ImageRef, MirrorError};

/// One image to copy: from `source` to `target` (the target's tag/digest is what is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyJob {
    /// Where it comes from.
    pub source: ImageRef,
    /// Where it goes.
    pub target: ImageRef,
}

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Blobs in flight at once.
    pub concurrency: usize,
    /// Keep only these platforms of indexes (the index is then rewritten: new digest).
    pub platforms: Option<PlatformFilter>,
    /// Where the bytes moved are reported (the CLI draws a bar on a terminal).
    pub progress: Progress,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            concurrency: 8,
            platforms: None,
            progress: Progress::hidden(),
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    /// Images asked for.
    pub images: usize,
    /// Images already identical at the target.
    pub images_up_to_date: usize,
    /// Manifests written.
    pub manifests_pushed: usize,
    /// Manifests already present.
    pub manifests_present: usize,
    /// Blobs streamed from the source.
    pub blobs_copied: usize,
    /// Blobs mounted from another repository of the target.
    pub blobs_mounted: usize,
    /// Blobs already present.
    pub blobs_present: usize,
    /// Bytes streamed.
    pub bytes_copied: u64,
    /// Wall time in milliseconds.
    pub millis: u64,
    /// `target reference → manifest digest` for every image.
    pub digests: BTreeMap<String, String>,
}

impl CopyReport {
    /// One-line summary with throughput.
    pub fn summary(&self) -> String {
        let secs = (self.millis as f64 / 1000.0).max(0.001);
        format!(
            "{} images ({} already up to date): {} blobs copied ({:.1} MB at {:.1} MB/s), {} mounted, {} present; {} manifests pushed, {} present; {:.2} s",
            self.images,
            self.images_up_to_date,
            self.blobs_copied,
            self.bytes_copied as f64 / 1e6,
            self.bytes_copied as f64 / 1e6 / secs,
            self.blobs_mounted,
            self.blobs_present,
            self.manifests_pushed,
            self.manifests_present,
            secs
        )
    }
}

/// A resolved image: what to push, children first.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// Source and target.
    pub job: CopyJob,
    /// Manifests to push by digest (platform manifests), in push order.
    pub children: Vec<RawManifest>,
    /// The top manifest pushed under the target's tag (or digest).
    pub top: RawManifest,
    /// Blobs (configs and layers) of the manifests to push.
    pub blobs: Vec<Descriptor>,
    /// Platform manifests found already at the target.
    pub manifests_present: usize,
}

/// Where a blob's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobSource {
    /// A registry repository.
    Registry {
        /// Registry host.
        registry: String,
        /// The repository (path inside the registry) the blob lives in.
        repo: String,
    },
    /// A byte range of an offline bundle (an uncompressed tar entry).
    Bundle {
        /// The bundle (its file, or its parts' base name), for messages.
        path: std::path::PathBuf,
        /// Where the entry's data is: `(file, offset, length)` per part it spans (one for a
        /// whole bundle), read in order.
        segments: Vec<(std::path::PathBuf, u64, u64)>,
        /// Entry name, for messages.
        entry: String,
    },
}

/// Where a blob must go.
#[derive(Debug, Clone)]
struct BlobNeed {
    digest: String,
    size: u64,
    source: BlobSource,
    /// (registry, repo), deduplicated, in first-seen order.
    targets: Vec<(String, String)>,
    image: String,
}

/// The error slot of a verifying body stream: reqwest reports a failed body only as "error
/// sending request", so the real cause (digest mismatch, …) is kept here.
pub type ErrorSlot = Arc<Mutex<Option<MirrorError>>>;

/// Error type of [`VerifyStream`] items (its message; the typed error is in the slot).
#[derive(Debug)]
pub struct StreamAbort(pub String);

impl std::fmt::Display for StreamAbort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StreamAbort {}

/// A byte stream that hashes as it goes and ends with an error instead of its last chunk when
/// the bytes do not match the expected digest and size.
pub struct VerifyStream<S> {
    inner: S,
    hasher: Sha256,
    seen: u64,
    size: u64,
    digest: String,
    what: String,
    slot: ErrorSlot,
    progress: Option<Phase>,
    done: bool,
}

impl<S> VerifyStream<S> {
    /// Wrap `inner`, expecting `size` bytes hashing to `digest`; `what` names the blob in errors.
    pub fn new(
        inner: S,
        digest: &str,
        size: u64,
        what: String,
        progress: Option<Phase>,
    ) -> (Self, ErrorSlot) {
        let slot: ErrorSlot = Arc::new(Mutex::new(None));
        (
            VerifyStream {
                inner,
                hasher: Sha256::new(),
                seen: 0,
                size,
                digest: digest.to_string(),
                what,
                slot: slot.clone(),
                progress,
                done: false,
            },
            slot,
        )
    }

    fn fail(&mut self, e: MirrorError) -> Poll<Option<Result<Bytes, StreamAbort>>> {
        self.done = true;
        let msg = e.to_string();
        *self.slot.lock().expect("slot") = Some(e);
        Poll::Ready(Some(Err(StreamAbort(msg))))
    }

    fn check_digest(&mut self) -> Option<MirrorError> {
        let actual = format!(
            "sha256:{}",
            hex::encode(std::mem::take(&mut self.hasher).finalize())
        );
        (actual != self.digest).then(|| MirrorError::DigestMismatch {
            what: self.what.clone(),
            expected: self.digest.clone(),
            actual,
        })
    }
}

impl<S, E> Stream for VerifyStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, StreamAbort>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                let n = chunk.len() as u64;
                self.seen += n;
                if self.seen > self.size {
                    let e = MirrorError::SizeMismatch {
                        what: self.what.clone(),
                        expected: self.size,
                        actual: self.seen,
                    };
                    return self.fail(e);
                }
                self.hasher.update(&chunk);
                if self.seen == self.size {
                    if let Some(e) = self.check_digest() {
                        return self.fail(e);
                    }
                    self.done = true;
                }
                if let Some(p) = &self.progress {
                    p.inc(n);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                let err = MirrorError::Http {
                    what: self.what.clone(),
                    url: String::new(),
                    status: 0,
                    message: format!("source stream broke after {} bytes: {e}", self.seen),
                };
                self.fail(err)
            }
            Poll::Ready(None) => {
                if self.seen < self.size {
                    let err = MirrorError::Http {
                        what: self.what.clone(),
                        url: String::new(),
                        status: 0,
                        message: format!("source ended after {} of {} bytes", self.seen, self.size),
                    };
                    return self.fail(err);
                }
                // Only a zero-size blob gets here unchecked.
                if let Some(e) = self.check_digest() {
                    return self.fail(e);
                }
                self.done = true;
                Poll::Ready(None)
            }
        }
    }
}

/// The platform-filtered variant of an index (new bytes, so a new digest).
fn filter_index(
    image: &str,
    top: &RawManifest,
    filter: &PlatformFilter,
) -> Result<RawManifest, MirrorError> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&top.bytes).map_err(|e| MirrorError::Manifest {
            image: image.into(),
            message: e.to_string(),
        })?;
    let list = v
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .ok_or_else(|| MirrorError::Manifest {
            image: image.into(),
            message: "index without manifests".into(),
        })?;
    let before = list.len();
    list.retain(|d| {
        let p: Option<Platform> = d
            .get("platform")
            .and_then(|p| serde_json::from_value(p.clone()).ok());
        filter.keeps(p.as_ref())
    });
    if list.len() == before {
        // Nothing dropped: keep the upstream bytes, and so the upstream digest.
        return Ok(top.clone());
    }
    if list.is_empty() {
        return Err(MirrorError::Usage(format!(
            "{image} has no manifest for --platform {}",
            filter.0.join(",")
        )));
    }
    let mut bytes = serde_json::to_vec_pretty(&v).expect("serialises");
    bytes.push(b'\n');
    Ok(RawManifest {
        digest: super::sha256_digest(&bytes),
        bytes,
        media_type: top.media_type.clone(),
    })
}

/// The outcome of [`resolve`].
#[derive(Debug, Clone)]
pub enum Resolved {
    /// The target already has this manifest digest under the tag.
    UpToDate(String),
    /// What to copy.
    Plan(Box<ImagePlan>),
}

/// Work out what copying `job` takes: `None` when the target already has the same manifest.
/// With `check_target` false (exports) nothing at the target is looked at.
pub async fn resolve(
    client: &RegistryClient,
    job: &CopyJob,
    opts: &CopyOptions,
    check_target: bool,
) -> Result<Resolved, MirrorError> {
    let image = job.source.to_string();
    let (target_head, source_head) = if !check_target {
        (None, None)
    } else if job.source.digest.is_some() {
        (client.head_manifest(&job.target).await?, None)
    } else {
        let (t, s) = tokio::join!(
            client.head_manifest(&job.target),
            client.head_manifest(&job.source)
        );
        (t?, s?)
    };
    let target_digest = target_head.and_then(|h| h.digest);
    let source_digest = job
        .source
        .digest
        .clone()
        .or_else(|| source_head.and_then(|h| h.digest));
    if opts.platforms.is_none() && target_digest.is_some() && target_digest == source_digest {
        return Ok(Resolved::UpToDate(target_digest.unwrap_or_default()));
    }
    let src_top = client.get_manifest(&job.source).await?;
    let parsed = parse_manifest(&image, &src_top)?;
    let mut plan = ImagePlan {
        job: job.clone(),
        children: Vec::new(),
        top: src_top.clone(),
        blobs: Vec::new(),
        manifests_present: 0,
    };
    match parsed {
        Parsed::Image { config, layers } => {
            plan.blobs.push(config);
            plan.blobs.extend(layers);
        }
        Parsed::Index(list) => {
            if let Some(f) = &opts.platforms {
                plan.top = filter_index(&image, &src_top, f)?;
                if target_digest.as_deref() == Some(plan.top.digest.as_str()) {
                    return Ok(Resolved::UpToDate(plan.top.digest));
                }
            }
            // Worklist: nested indexes are rare but legal.
            let mut work: Vec<Descriptor> = list
                .into_iter()
                .filter(|d| {
                    opts.platforms
                        .as_ref()
                        .is_none_or(|f| f.keeps(d.platform.as_ref()))
                })
                .collect();
            let mut children = Vec::new();
            while let Some(d) = work.pop() {
                let child_src = job.source.with_reference(None, Some(d.digest.clone()));
                let child_dst = job.target.with_reference(None, Some(d.digest.clone()));
                if check_target && client.head_manifest(&child_dst).await?.is_some() {
                    plan.manifests_present += 1;
                    continue;
                }
                let m = client.get_manifest(&child_src).await?;
                if m.bytes.len() as u64 != d.size {
                    return Err(MirrorError::SizeMismatch {
                        what: format!("manifest {child_src}"),
                        expected: d.size,
                        actual: m.bytes.len() as u64,
                    });
                }
                match parse_manifest(&child_src.to_string(), &m)? {
                    Parsed::Image { config, layers } => {
                        plan.blobs.push(config);
                        plan.blobs.extend(layers);
                    }
                    Parsed::Index(more) => work.extend(more),
                }
                children.push(m);
            }
            // Pushed in reverse discovery order: nested children before their parents.
            children.reverse();
            plan.children = children;
        }
    }
    // Foreign layers live at their URLs, not in registries.
    plan.blobs
        .retain(|d| d.urls.as_ref().is_none_or(|u| u.is_empty()));
    Ok(Resolved::Plan(Box::new(plan)))
}

type KnownBlobs = Mutex<HashMap<(String, String), String>>;

#[derive(Debug, Default, Clone, Copy)]
struct BlobOutcome {
    copied: bool,
    mounted: usize,
    present: usize,
    bytes: u64,
}

/// Open a blob's bytes as a stream.
async fn open_source(
    client: &RegistryClient,
    need: &BlobNeed,
) -> Result<futures::stream::BoxStream<'static, Result<Bytes, String>>, MirrorError> {
    match &need.source {
        BlobSource::Registry { registry, repo } => {
            let resp = client.get_blob(registry, repo, &need.digest).await?;
            Ok(resp.bytes_stream().map_err(|e| e.to_string()).boxed())
        }
        BlobSource::Bundle { segments, .. } => {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            // Each part's range in turn: a split bundle is read without concatenating it.
            let s = futures::stream::iter(segments.clone())
                .then(|(path, offset, len)| async move {
                    let open = |e: std::io::Error| format!("{}: {e}", path.display());
                    let mut f = tokio::fs::File::open(&path).await.map_err(open)?;
                    f.seek(std::io::SeekFrom::Start(offset))
                        .await
                        .map_err(open)?;
                    Ok::<_, String>(
                        tokio_util::io::ReaderStream::with_capacity(f.take(len), 256 * 1024)
                            .map_err(|e| e.to_string()),
                    )
                })
                .try_flatten();
            Ok(s.boxed())
        }
    }
}

fn describe(need: &BlobNeed) -> String {
    match &need.source {
        BlobSource::Registry { registry, repo } => {
            format!(
                "blob {} of {} (from {registry}/{repo})",
                need.digest, need.image
            )
        }
        BlobSource::Bundle { entry, .. } => format!("bundle entry {entry}"),
    }
}

/// In a bundle, a bad blob is a bad bundle entry: say so, naming it.
fn bundle_error(need: &BlobNeed, e: MirrorError) -> MirrorError {
    match (&need.source, &e) {
        (
            BlobSource::Bundle { path, entry, .. },
            MirrorError::DigestMismatch { .. } | MirrorError::SizeMismatch { .. },
        )
        | (BlobSource::Bundle { path, entry, .. }, MirrorError::Http { status: 0, .. }) => {
            MirrorError::Bundle {
                bundle: path.display().to_string(),
                entry: entry.clone(),
                problem: e.to_string(),
            }
        }
        _ => e,
    }
}

/// Stream one blob from its source into `registry/repo`.
async fn stream_blob(
    client: &RegistryClient,
    need: &BlobNeed,
    registry: &str,
    repo: &str,
    progress: &Phase,
) -> Result<(), MirrorError> {
    let what = describe(need);
    client
        .retry(&what, || async {
            let location = client.start_upload(registry, repo, &what).await?;
            let src = open_source(client, need).await?;
            let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let c2 = counted.clone();
            let src = src.inspect_ok(move |b| {
                c2.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
            });
            let (verify, slot) = VerifyStream::new(
                src,
                &need.digest,
                need.size,
                what.clone(),
                Some(progress.clone()),
            );
            let body = reqwest::Body::wrap_stream(verify);
            let res = client
                .finish_upload(
                    registry,
                    repo,
                    &location,
                    &need.digest,
                    need.size,
                    body,
                    &what,
                )
                .await;
            let stream_err = slot.lock().expect("slot").take();
            let res = match (res, stream_err) {
                (_, Some(e)) => Err(e),
                (r, None) => r,
            };
            if res.is_err() {
                let n = counted.load(std::sync::atomic::Ordering::Relaxed);
                progress.rewind(n);
            }
            res
        })
        .await
        .map_err(|e| bundle_error(need, e))
}

async fn transfer_blob(
    client: &RegistryClient,
    need: &BlobNeed,
    known: &KnownBlobs,
    progress: &Phase,
) -> Result<BlobOutcome, MirrorError> {
    let mut out = BlobOutcome::default();
    let mut missing = Vec::new();
    let heads = futures::future::join_all(
        need.targets
            .iter()
            .map(|(r, p)| client.head_blob(r, p, &need.digest)),
    )
    .await;
    for ((reg, repo), h) in need.targets.iter().zip(heads) {
        if h?.is_some() {
            out.present += 1;
            known
                .lock()
                .expect("known")
                .entry((reg.clone(), need.digest.clone()))
                .or_insert(repo.clone());
        } else {
            missing.push((reg.clone(), repo.clone()));
        }
    }
    progress.shrink(need.size);
    for (reg, repo) in missing {
        let from = known
            .lock()
            .expect("known")
            .get(&(reg.clone(), need.digest.clone()))
            .cloned();
        let mut mounted = false;
        if let Some(from) = from.filter(|f| *f != repo) {
            mounted = client.mount_blob(&reg, &repo, &need.digest, &from).await?;
        }
        if mounted {
            out.mounted += 1;
        } else {
            progress.grow(need.size);
            stream_blob(client, need, &reg, &repo, progress).await?;
            out.copied = true;
            out.bytes += need.size;
        }
        known
            .lock()
            .expect("known")
            .entry((reg, need.digest.clone()))
            .or_insert(repo);
    }
    Ok(out)
}

/// Copy images (see the module docs). Fails on the first image that cannot be copied, naming
/// it; everything completed before stays and is skipped by the next run.
pub async fn copy_images(
    client: &RegistryClient,
    jobs: &[CopyJob],
    opts: &CopyOptions,
) -> Result<CopyReport, MirrorError> {
    let started = Instant::now();
    let conc = opts.concurrency.max(1);
    let mut report = CopyReport {
        images: jobs.len(),
        ..Default::default()
    };
    let mut resolved: Vec<(usize, Resolved)> = futures::stream::iter(jobs.iter().enumerate())
        .map(|(i, j)| async move { resolve(client, j, opts, true).await.map(|p| (i, p)) })
        .buffer_unordered(conc)
        .try_collect()
        .await?;
    resolved.sort_by_key(|(i, _)| *i);
    let mut plans = Vec::new();
    for (i, p) in resolved {
        match p {
            Resolved::UpToDate(d) => {
                report.images_up_to_date += 1;
                report.digests.insert(jobs[i].target.to_string(), d);
            }
            Resolved::Plan(p) => plans.push(*p),
        }
    }
    let source = |p: &ImagePlan, _d: &Descriptor| BlobSource::Registry {
        registry: p.job.source.registry.clone(),
        repo: p.job.source.repository.clone(),
    };
    execute(client, &plans, &source, opts, &mut report).await?;
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Carry out resolved plans: blobs (each digest once, then mounts), then manifests, children
/// first. `source` says where each blob's bytes come from.
pub async fn execute(
    client: &RegistryClient,
    plans: &[ImagePlan],
    source: &(dyn Fn(&ImagePlan, &Descriptor) -> BlobSource + Sync),
    opts: &CopyOptions,
    report: &mut CopyReport,
) -> Result<(), MirrorError> {
    let conc = opts.concurrency.max(1);
    let mut needs: BTreeMap<String, BlobNeed> = BTreeMap::new();
    for p in plans {
        report.manifests_present += p.manifests_present;
        for b in &p.blobs {
            let t = (
                p.job.target.registry.clone(),
                p.job.target.repository.clone(),
            );
            let n = needs.entry(b.digest.clone()).or_insert_with(|| BlobNeed {
                digest: b.digest.clone(),
                size: b.size,
                source: source(p, b),
                targets: Vec::new(),
                image: p.job.source.to_string(),
            });
            if !n.targets.contains(&t) {
                n.targets.push(t);
            }
        }
    }
    let total: u64 = needs.values().map(|n| n.size).sum();
    let progress = opts.progress.bytes("mirror", total);
    let known: KnownBlobs = Mutex::new(HashMap::new());
    let outcomes: Result<Vec<BlobOutcome>, MirrorError> = futures::stream::iter(needs.values())
        .map(|n| transfer_blob(client, n, &known, &progress))
        .buffer_unordered(conc)
        .try_collect()
        .await;
    progress.clear();
    for o in outcomes? {
        if o.copied {
            report.blobs_copied += 1;
        }
        report.blobs_mounted += o.mounted;
        report.blobs_present += o.present;
        report.bytes_copied += o.bytes;
    }
    let pushed: Vec<(String, String, usize)> = futures::stream::iter(plans.iter())
        .map(|p| async move {
            let mut n = 0;
            for c in &p.children {
                client
                    .put_manifest(
                        &p.job.target.with_reference(None, Some(c.digest.clone())),
                        c,
                    )
                    .await?;
                n += 1;
            }
            let d = client.put_manifest(&p.job.target, &p.top).await?;
            Ok::<_, MirrorError>((p.job.target.to_string(), d, n + 1))
        })
        .buffer_unordered(conc)
        .try_collect()
        .await?;
    for (t, d, n) in pushed {
        report.digests.insert(t, d);
        report.manifests_pushed += n;
    }
    Ok(())
}
