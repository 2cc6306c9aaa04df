//! `kprov state copy SRC DST`: move clusters between state stores (e.g. `file://` → `s3://`).

use clap::{Args, Subcommand};
use kprov_state::Condition;

use super::{Cli, ExitError};

/// Arguments of `state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: StateWhat,
}

/// State store operations.
#[derive(Debug, Subcommand)]
pub enum StateWhat {
    /// Copy clusters from one store to another. The destination must not hold them yet.
    Copy {
        /// Source store URL.
        src: String,
        /// Destination store URL.
        dst: String,
        /// Copy only this cluster (default: every cluster in SRC).
        #[arg(long)]
        cluster: Option<String>,
    },
}

/// Run `state`.
pub async fn run(_cli: &Cli, a: &StateArgs) -> anyhow::Result<()> {
    let StateWhat::Copy { src, dst, cluster } = &a.what;
    let from = crate::store::open(src)
        .await
        .map_err(|e| ExitError::usage(format!("state copy SRC: {e}")))?;
    let to = crate::store::open(dst)
        .await
        .map_err(|e| ExitError::usage(format!("state copy DST: {e}")))?;
    let from_repo = crate::repo::Repo::new(from.clone());
    let clusters = match cluster {
        Some(c) => vec![c.clone()],
        None => from_repo.clusters().await?,
    };
    if clusters.is_empty() {
        return Err(ExitError::usage(format!(
            "state copy SRC: no cluster in {src}; check the URL (list its clusters with `kprov --state {src} get clusters`)"
        )));
    }
    for c in &clusters {
        from_repo.require(c).await?;
        if to.get(&crate::repo::config_key(c)).await?.is_some() {
            return Err(ExitError::usage(format!(
                "cluster {c} already exists in {dst}; delete it there first"
            )));
        }
    }
    for c in &clusters {
        let keys = from.list(&format!("{c}/")).await?;
        let cfg = crate::repo::config_key(c);
        let skip =
            |k: &str| k == kprov_state::lease::lease_key(c) || k.ends_with("/journal/current.json");
        // Everything else first, config.yaml last: a copy cut short leaves no half cluster.
        let mut n = 0;
        for k in keys.iter().filter(|k| !skip(k) && **k != cfg) {
            if let Some(o) = from.get(k).await? {
                to.put(k, &o.bytes, Condition::None).await?;
                n += 1;
            }
        }
        let o = from
            .get(&cfg)
            .await?
            .ok_or_else(|| anyhow::anyhow!("cluster {c} vanished from {src} during the copy"))?;
        to.put(&cfg, &o.bytes, Condition::IfAbsent).await?;
        eprintln!("Copied cluster {c}: {} objects from {src} to {dst}.", n + 1);
    }
    Ok(())
}
