//! The etcd snapshot copy's way to the node when the state store cannot hand it a URL (a
//! `file://` store only this machine reads): uploaded with `--snapshot-to` — a target of the
//! cluster's file repository, as for `mirror --files-to` — under
//! `kprov/etcd-restore/CLUSTER/snapshot-SHA.enc`, fetched by the node from
//! `spec.assets.fileRepository`, and removed once the restore is done. The copy is encrypted
//! with a key only the restore record (a secret) and the node's user-data hold.

use anyhow::Context as _;

use crate::assets;
use crate::mirror::catalogue::FileAsset;
use crate::mirror::files::{self, FileTarget};
use crate::repo::Repo;

/// The copy as a file of the repository (its upstream URL names only its place there).
async fn asset(repo: &Repo, cluster: &str, sha256: &str) -> anyhow::Result<FileAsset> {
    let stored = repo.require(cluster).await?;
    let upstream = format!(
        "https://kprov/etcd-restore/{cluster}/snapshot-{}.enc",
        &sha256[..16.min(sha256.len())]
    );
    Ok(FileAsset {
        name: "etcd-snapshot".into(),
        mirror_url: assets::file_url(&upstream, &stored.config.cluster.spec.assets),
        upstream_url: upstream,
        sha256: sha256.to_string(),
        arch: kprov_providers::Arch::Amd64,
    })
}

/// Upload the encrypted copy `bytes` (SHA-256 `sha256`) to `to`; the URL the node fetches it
/// from.
pub(super) async fn upload(
    repo: &Repo,
    cluster: &str,
    to: &str,
    sha256: &str,
    bytes: &[u8],
) -> anyhow::Result<String> {
    let target = FileTarget::parse(to)?;
    let file = asset(repo, cluster, sha256).await?;
    // the uploaders read a file: staged 0600, removed whatever happens
    let staging = std::env::temp_dir().join(format!(
        "kprov-etcd-copy-{}-{}.enc",
        std::process::id(),
        &sha256[..16.min(sha256.len())]
    ));
    write_private(&staging, bytes)
        .with_context(|| format!("staging the etcd snapshot copy in {}", staging.display()))?;
    let sent = files::upload(&reqwest::Client::new(), &target, &file, &staging).await;
    let _ = std::fs::remove_file(&staging);
    sent.with_context(|| {
        format!(
            "uploading cluster {cluster}'s etcd snapshot copy to {} (--snapshot-to)",
            target.location(&file.upstream_url)
        )
    })?;
    tracing::info!(url = %file.mirror_url, "etcd snapshot copy in the file repository");
    Ok(file.mirror_url)
}

/// Remove the copy from `to` (best effort: a copy left behind is encrypted, and a warning says
/// where it is).
pub(super) async fn remove(repo: &Repo, cluster: &str, to: &str, sha256: &str) {
    let result = async {
        let target = FileTarget::parse(to)?;
        let file = asset(repo, cluster, sha256).await?;
        files::remove(&reqwest::Client::new(), &target, &file)
            .await
            .with_context(|| target.location(&file.upstream_url))
    }
    .await;
    if let Err(e) = result {
        tracing::warn!("the encrypted etcd snapshot copy stays in the file repository: {e:#}");
    }
}

/// Write `bytes` to a new file only the owner reads.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}
