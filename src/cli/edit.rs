//! `kprov edit cluster [NAME]` / `kprov edit instancegroup|ig GROUP`: the stored document in
//! `$VISUAL`/`$EDITOR`, validated on save with file:line messages; on an error the file is
//! opened again with the problems as comments on top (as `kubectl edit` does), until it is
//! valid — then stored as the next generation — or saved unchanged (cancelled, nothing stored).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{current_cluster, open_store, Cli, ExitError};
use crate::ops::specs::{self, Edited};
use crate::repo::Repo;

/// Arguments of `edit`.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// What to edit.
    #[command(subcommand)]
    pub what: EditWhat,
}

/// What `edit` edits.
#[derive(Debug, Subcommand)]
pub enum EditWhat {
    /// The Cluster document of a cluster.
    Cluster {
        /// Cluster (default: --name, KPROV_CLUSTER_NAME, or the only cluster in the store).
        cluster: Option<String>,
    },
    /// One instance group of the current cluster (--name).
    #[command(visible_alias = "ig")]
    Instancegroup {
        /// Instance group.
        group: String,
        /// Cluster (default: --name, KPROV_CLUSTER_NAME, or the only cluster in the store).
        cluster: Option<String>,
    },
}

const HEADER: &str =
    "# Edit the document below; it is validated and stored when you save and quit.\n\
# Save it unchanged (or empty) to cancel. Apply the change with `kprov update cluster --yes`.\n";

/// Run `edit`.
pub async fn run(cli: &Cli, a: &EditArgs) -> anyhow::Result<()> {
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let (cluster_arg, what) = match &a.what {
        EditWhat::Cluster { cluster } => (cluster.as_deref(), Edited::Cluster),
        EditWhat::Instancegroup { group, cluster } => {
            (cluster.as_deref(), Edited::Group(group.clone()))
        }
    };
    let name = current_cluster(cluster_arg, cli.name.as_deref(), &repo).await?;
    let prev = repo.require(&name).await?;
    let original = match &what {
        Edited::Cluster => serde_yaml::to_string(&prev.config.cluster)?,
        Edited::Group(g) => {
            let group = prev
                .config
                .groups
                .iter()
                .find(|x| x.name() == g)
                .ok_or_else(|| {
                    let known: Vec<&str> = prev.config.groups.iter().map(|x| x.name()).collect();
                    ExitError::usage(format!(
                        "cluster {name} has no instance group {g:?}; fix: edit one of {}",
                        known.join(", ")
                    ))
                })?;
            serde_yaml::to_string(group)?
        }
    };
    let file = std::env::temp_dir().join(format!("kprov-edit-{name}-{}.yaml", std::process::id()));
    let mut shown = format!("{HEADER}{original}");
    loop {
        std::fs::write(&file, &shown)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
        open_editor(&file)?;
        let text = std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("cannot read back {}: {e}", file.display()))?;
        if body(&text).trim().is_empty() || body(&text) == original {
            let _ = std::fs::remove_file(&file);
            eprintln!("Edit cancelled, no changes made.");
            return Ok(());
        }
        if text == shown {
            // re-opened with errors and saved unchanged: give up, keep the user's text
            return Err(ExitError::usage(format!(
                "edit cancelled: the document still has the problems listed at the top of {}; nothing was stored. fix: correct them and run `kprov create -f {} --replace`, or edit again",
                file.display(),
                file.display()
            )));
        }
        match specs::edited(&prev, &what, &file.display().to_string(), &text) {
            Ok(spec) => {
                let stored = specs::store(&repo, &spec, Some(&prev)).await?;
                let _ = std::fs::remove_file(&file);
                eprintln!(
                    "Cluster {name} updated (generation {}). See what changes: kprov update cluster {name}",
                    stored.generation
                );
                return Ok(());
            }
            Err(e) => {
                shown = format!("{}{}", error_header(&format!("{e:#}")), body(&text));
                eprintln!("{e:#}\n(re-opening the editor)");
            }
        }
    }
}

/// The text without the leading comment lines kprov wrote.
fn body(text: &str) -> String {
    let mut lines = text.lines().peekable();
    let mut out = String::new();
    while lines.peek().is_some_and(|l| l.starts_with('#')) {
        lines.next();
    }
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The problems as comment lines above the document.
fn error_header(errors: &str) -> String {
    let mut h = String::from(
        "# The edited document is not valid; fix the problems below (line numbers are of this\n# file as it was saved), save and quit. Save it unchanged to give up.\n#\n",
    );
    for l in errors.lines() {
        h.push_str(&format!("# {l}\n"));
    }
    h
}

/// Run `$VISUAL`, else `$EDITOR`, else `vi` on `file` (through `sh -c`, so `EDITOR="code
/// --wait"` works) and wait for it.
fn open_editor(file: &Path) -> anyhow::Result<()> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file)
        .status()
        .map_err(|e| {
            ExitError::usage(format!(
                "cannot run the editor {editor:?}: {e}; fix: set EDITOR (e.g. EDITOR=nano)"
            ))
        })?;
    if !status.success() {
        let kept: PathBuf = file.to_path_buf();
        return Err(ExitError::usage(format!(
            "the editor {editor:?} exited with {status}; nothing was stored (your text is in {})",
            kept.display()
        )));
    }
    Ok(())
}
