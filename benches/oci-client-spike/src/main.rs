//! Spike (issue 14, §3): does `oci-client` (0.18) hold up as kprov's mirror copier?
//!
//! The same algorithm as `src/mirror/copy.rs`, written only with oci-client's public API:
//! (1) resolve each reference (HEAD target and source — equal digests → done; else
//! `pull_manifest_raw`, and each platform manifest of an index the target lacks); (2) each blob
//! digest once: `blob_exists` in every target repository, `pull_blob_stream` →
//! `push_blob_stream` (monolithic, streamed, `Content-Length`) into the first that lacks it,
//! `mount_blob` into the others; (3) `push_manifest_raw` of the exact bytes, platform manifests
//! before their index. Plain HTTP, anonymous — the loopback benchmark registries.
//!
//! Usage: `oci-client-spike --from HOST:PORT --to HOST:PORT [--concurrency N] [--chunked] LIST`
//! (LIST: one `repo:tag` a line, as `kprov mirror --from-file`). Measured by `benches/mirror.rs` with
//! `KPROV_BENCH_OCI_SPIKE=path/to/oci-client-spike`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ACCEPT: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Desc {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Desc>>,
    #[serde(default)]
    config: Option<Desc>,
    #[serde(default)]
    layers: Option<Vec<Desc>>,
}

/// A manifest to push: exact bytes, their digest, and the content type to send.
/// `pull_manifest_raw` does not return the registry's `Content-Type`, so the type is read from
/// the document's `mediaType` (or the index descriptor's) — absent in some valid OCI manifests.
struct Manifest {
    bytes: Bytes,
    digest: String,
    media_type: String,
}

struct Image {
    repo: String,
    tag: String,
    children: Vec<Manifest>,
    top: Manifest,
}

struct Spike {
    client: Client,
    from: String,
    to: String,
    auth: RegistryAuth,
}

impl Spike {
    fn src(&self, repo: &str, tag: &str) -> Reference {
        Reference::with_tag(self.from.clone(), repo.into(), tag.into())
    }
    fn dst(&self, repo: &str, tag: &str) -> Reference {
        Reference::with_tag(self.to.clone(), repo.into(), tag.into())
    }
    fn at(&self, registry: &str, repo: &str, digest: &str) -> Reference {
        Reference::with_digest(registry.into(), repo.into(), digest.into())
    }

    /// Step 1 for one reference: `None` when the target tag already has the source's digest.
    async fn resolve(&self, line: &str, blobs: &mut Needs) -> Result<Option<Image>> {
        let (repo, tag) = line.rsplit_once(':').context("LIST lines are repo:tag")?;
        let (src, dst) = (self.src(repo, tag), self.dst(repo, tag));
        let have = self
            .client
            .fetch_manifest_digest(&dst, &self.auth)
            .await
            .ok();
        let want = self.client.fetch_manifest_digest(&src, &self.auth).await?;
        if have.as_deref() == Some(want.as_str()) {
            return Ok(None);
        }
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(&src, &self.auth, ACCEPT)
            .await?;
        let doc: Doc = serde_json::from_slice(&bytes)?;
        let media_type = doc
            .media_type
            .clone()
            .ok_or_else(|| anyhow!("{line}: no mediaType"))?;
        let mut children = Vec::new();
        for d in doc.manifests.iter().flatten() {
            let at_dst = self.at(&self.to, repo, &d.digest);
            if self
                .client
                .fetch_manifest_digest(&at_dst, &self.auth)
                .await
                .is_ok()
            {
                continue;
            }
            let at_src = self.at(&self.from, repo, &d.digest);
            let (b, cd) = self
                .client
                .pull_manifest_raw(&at_src, &self.auth, ACCEPT)
                .await?;
            let c: Doc = serde_json::from_slice(&b)?;
            push_blobs(&c, repo, blobs);
            let mt = c
                .media_type
                .or(d.media_type.clone())
                .context("child mediaType")?;
            children.push(Manifest {
                bytes: b,
                digest: cd,
                media_type: mt,
            });
        }
        push_blobs(&doc, repo, blobs);
        let top = Manifest {
            bytes,
            digest,
            media_type,
        };
        Ok(Some(Image {
            repo: repo.into(),
            tag: tag.into(),
            children,
            top,
        }))
    }

    /// Step 2 for one digest: stream it into the first repository that lacks it, mount it into
    /// the others (falling back to a streamed copy when a mount is refused).
    async fn copy_blob(&self, d: &Desc, repos: &[String]) -> Result<u64> {
        let mut missing = Vec::new();
        for r in repos {
            if !self
                .client
                .blob_exists(&self.dst(r, "x"), &d.digest)
                .await?
            {
                missing.push(r.clone());
            }
        }
        let Some((first, rest)) = missing.split_first() else {
            return Ok(0);
        };
        let mut sent = self.stream_blob(d, &repos[0], first).await?;
        for r in rest {
            let mounted = self
                .client
                .mount_blob(&self.dst(r, "x"), &self.dst(first, "x"), &d.digest)
                .await;
            if mounted.is_err() {
                sent += self.stream_blob(d, &repos[0], r).await?;
            }
        }
        Ok(sent)
    }

    async fn stream_blob(&self, d: &Desc, src_repo: &str, to_repo: &str) -> Result<u64> {
        let src = self.src(src_repo, "x");
        let s = self
            .client
            .pull_blob_stream(&src, d.digest.as_str())
            .await?;
        let body = s.stream.map_err(OciDistributionError::IoError);
        self.client
            .push_blob_stream(&self.dst(to_repo, "x"), body, &d.digest, Some(d.size))
            .await
            .with_context(|| format!("push {} to {to_repo}", d.digest))?;
        Ok(d.size)
    }

    /// Step 3 for one image: platform manifests by digest, then the top manifest by tag.
    async fn push_image(&self, img: &Image) -> Result<()> {
        for c in &img.children {
            let r = self.at(&self.to, &img.repo, &c.digest);
            self.client
                .push_manifest_raw(&r, c.bytes.clone(), c.media_type.parse()?)
                .await?;
        }
        let r = self.dst(&img.repo, &img.tag);
        self.client
            .push_manifest_raw(&r, img.top.bytes.clone(), img.top.media_type.parse()?)
            .await?;
        // Digest preservation: what the target now serves under the tag is the source's digest.
        let got = self.client.fetch_manifest_digest(&r, &self.auth).await?;
        if got != img.top.digest {
            bail!(
                "{}:{}: target digest {got} != {}",
                img.repo,
                img.tag,
                img.top.digest
            );
        }
        Ok(())
    }
}

/// Blobs to copy: a descriptor and the source repository that holds it.
type Needs = Vec<(Desc, String)>;

fn push_blobs(doc: &Doc, repo: &str, out: &mut Needs) {
    for d in doc.config.iter().chain(doc.layers.iter().flatten()) {
        if d.urls.as_ref().is_none_or(|u| u.is_empty()) {
            out.push((d.clone(), repo.to_string()));
        }
    }
}

struct Args {
    from: String,
    to: String,
    concurrency: usize,
    list: String,
    chunked: bool,
}

fn args() -> Result<Args> {
    let mut a = std::env::args().skip(1);
    let (mut from, mut to, mut concurrency, mut list, mut chunked) = (None, None, 8, None, false);
    while let Some(x) = a.next() {
        match x.as_str() {
            "--from" => from = a.next(),
            "--to" => to = a.next(),
            "--concurrency" => concurrency = a.next().context("--concurrency N")?.parse()?,
            "--chunked" => chunked = true,
            _ => list = Some(x),
        }
    }
    Ok(Args {
        from: from.context("--from HOST:PORT")?,
        to: to.context("--to HOST:PORT")?,
        concurrency,
        list: list.context("LIST file")?,
        chunked,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        // Monolithic: one streamed PUT with Content-Length. `--chunked` tries oci-client's
        // chunked mode instead (one PATCH per stream item, then a closing PUT).
        use_monolithic_push: !a.chunked,
        platform_resolver: None,
        ..Default::default()
    });
    let spike = Spike {
        client,
        from: a.from,
        to: a.to,
        auth: RegistryAuth::Anonymous,
    };
    let text = std::fs::read_to_string(&a.list).with_context(|| a.list.clone())?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let t = std::time::Instant::now();

    let resolved: Vec<(Option<Image>, Needs)> = stream::iter(lines)
        .map(|l| {
            let s = &spike;
            async move {
                let mut blobs = Vec::new();
                let img = s
                    .resolve(l, &mut blobs)
                    .await
                    .with_context(|| l.to_string())?;
                Ok::<_, anyhow::Error>((img, blobs))
            }
        })
        .buffer_unordered(a.concurrency)
        .try_collect()
        .await?;
    let mut needs: BTreeMap<String, (Desc, Vec<String>)> = BTreeMap::new();
    let mut images = Vec::new();
    for (img, blobs) in resolved {
        for (d, repo) in blobs {
            let e = needs
                .entry(d.digest.clone())
                .or_insert_with(|| (d, Vec::new()));
            if !e.1.contains(&repo) {
                e.1.push(repo);
            }
        }
        images.extend(img);
    }

    let sent: Vec<u64> = stream::iter(needs.values())
        .map(|(d, repos)| spike.copy_blob(d, repos))
        .buffer_unordered(a.concurrency)
        .try_collect()
        .await?;
    stream::iter(&images)
        .map(|i| spike.push_image(i))
        .buffer_unordered(a.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    println!(
        "oci-client spike: {} images copied, {} blobs needed, {} bytes sent, {:.2} s",
        images.len(),
        needs.len(),
        sent.iter().sum::<u64>(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
