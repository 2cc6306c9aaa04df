//! `kprov mirror`: copy a cluster's images (and files) to its mirrors, arbitrary image lists to a
//! registry, or everything into / out of an offline bundle. See `docs/mirror.md`.

use std::path::PathBuf;

use clap::Args;

use super::{current_cluster, open_store, Cli, ExitError, Output};
use crate::mirror::bundle;
use crate::mirror::copy::{copy_images, CopyJob, CopyOptions};
use crate::mirror::files::{self, FileTarget};
use crate::mirror::registry::RegistryClient;
use crate::mirror::{ImageRef, MirrorError, Naming};
use crate::ops::mirror::{MirrorPlan, MirrorRequest, Selection};
use crate::ops::{self, assets::client_options_for, mirror::usage};
use crate::repo::Repo;
use crate::spec::Assets;

/// Arguments of `mirror`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kprov mirror demo                                  # to the cluster's assets.containerRegistry\n  kprov mirror demo --to mirror.local:5000 --files-to s3://bucket/k8s\n  kprov mirror --from-file images.txt --to mirror.local:5000\n  kprov mirror demo --to-bundle demo.tar             # on the connected side\n  kprov mirror --from-bundle demo.tar --to mirror.local:5000 --files-to file:///srv/files\n\nBundles on removable media:\n  kprov mirror prod staging --from-file extra.txt --to-bundle all.tar --split 4G\n                                                     # all.tar.part-0001… + all.tar.SHA256SUMS\n  sha256sum -c all.tar.SHA256SUMS                    # on the other side, in the parts' directory\n  kprov mirror --verify-bundle all.tar               # parts, index, every blob and file\n  kprov mirror --from-bundle all.tar --to mirror.local:5000"
)]
pub struct MirrorArgs {
    /// Clusters whose catalogues are mirrored (default: the current cluster). Several (with
    /// --to-bundle or --to) go into one run, each shared image and blob once.
    #[arg(value_name = "CLUSTER")]
    pub cluster: Vec<String>,
    /// Target registry `host[:port][/prefix]`; images keep their upstream host as first path
    /// segment. Default: the cluster's `assets` mapping.
    #[arg(long, value_name = "REGISTRY")]
    pub to: Option<String>,
    /// Pull from this registry (laid out like a kprov mirror) instead of upstream.
    #[arg(long, value_name = "REGISTRY")]
    pub from: Option<String>,
    /// Copy the cluster's files here: s3://BUCKET[/PREFIX], file:///DIR or https://HOST/PATH (HTTP PUT).
    #[arg(long, value_name = "URL")]
    pub files_to: Option<String>,
    /// Download files from this file repository (laid out HOST/PATH) instead of upstream.
    #[arg(long, value_name = "URL")]
    pub files_from: Option<String>,
    /// Mirror the images listed in FILE (one reference a line, `#` comments): instead of a
    /// cluster's, or with CLUSTERs in addition to theirs.
    #[arg(long, value_name = "FILE", conflicts_with = "from_bundle")]
    pub from_file: Option<PathBuf>,
    /// Write an offline bundle (one tar) instead of copying to a registry.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["to", "from_bundle", "files_to"])]
    pub to_bundle: Option<PathBuf>,
    /// With --to-bundle: write parts of at most SIZE (`4G`, `700M`, `4Gi`) named
    /// `FILE.part-0001`, … plus `FILE.SHA256SUMS` (check with `sha256sum -c`).
    #[arg(long, value_name = "SIZE", requires = "to_bundle")]
    pub split: Option<String>,
    /// Load an offline bundle into --to (and its files into --files-to). FILE is the bundle, or
    /// for a split one its base name (or `FILE.SHA256SUMS`): every part is checked first.
    #[arg(long, value_name = "FILE", conflicts_with = "cluster", requires = "to")]
    pub from_bundle: Option<PathBuf>,
    /// Check a bundle (whole or split) without a registry: parts, index, every blob's digest
    /// and size, every file's SHA-256; prints a summary, or names the first bad entry.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["cluster", "to", "to_bundle", "from_bundle", "from_file", "files_to", "dry_run"])]
    pub verify_bundle: Option<PathBuf>,
    /// Copy only these platforms of multi-arch images (`linux/arm64`, repeatable or comma
    /// separated). The index is rewritten to list only them, so its digest differs from
    /// upstream (pins of the upstream index digest will not resolve); platform manifests keep
    /// their digests. Default: all platforms, byte-identical — except --to-bundle of clusters,
    /// which defaults to their instance groups' architectures (images pinned by digest keep
    /// every platform).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Vec<String>,
    /// Registry host spoken to over plain HTTP (repeatable). Only for trusted networks.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// The --from / upstream registries speak plain HTTP.
    #[arg(long)]
    pub src_insecure: bool,
    /// The target registry speaks plain HTTP (implied by the cluster's `assets.insecure`).
    #[arg(long)]
    pub dest_insecure: bool,
    /// Extra PEM CA bundle to trust (repeatable; the cluster's `assets.caBundle` is trusted too).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Vec<PathBuf>,
    /// Blobs in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Attempts per request for transient failures (first try included).
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Report format on stdout: `json` is --json, `yaml` the same as YAML (default: none,
    /// the summary goes to stderr).
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
    /// Check the inputs (image list, bundle with its manifests, mapping) and print what would
    /// be copied, `SOURCE -> TARGET` a line, without contacting any registry.
    #[arg(long, conflicts_with = "to_bundle")]
    pub dry_run: bool,
}

fn read_list(path: &PathBuf, names: &Naming) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ExitError::usage(format!("--from-file {}: {e}", path.display())))?;
    parse_image_list(&path.display().to_string(), &text, names).map_err(usage)
}

/// Parse an image list (`--from-file`): one reference a line, `#` comments, blank lines
/// ignored. Every reference, and the names it is read from and copied to under `names`, is
/// checked here, so a bad one is named with `FILE:LINE` before anything is copied.
pub fn parse_image_list(
    file: &str,
    text: &str,
    names: &Naming,
) -> Result<Vec<String>, MirrorError> {
    let mut list = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let r = line.split('#').next().unwrap_or("").trim();
        if r.is_empty() {
            continue;
        }
        names
            .plan(r)
            .map_err(|e| MirrorError::Usage(format!("--from-file {file}:{}: {e}", i + 1)))?;
        list.push(r.to_string());
    }
    if list.is_empty() {
        return Err(MirrorError::Usage(format!(
            "--from-file {file}: no image references in it; fix: write one reference a line, e.g. registry.k8s.io/pause:3.10"
        )));
    }
    Ok(list)
}

/// Print a report on stdout in the format asked for (nothing without `--json` / `-o`).
fn print_report(a: &MirrorArgs, r: &impl serde::Serialize) -> anyhow::Result<()> {
    match (a.json, a.output) {
        (true, _) | (_, Some(Output::Json)) => println!("{}", serde_json::to_string_pretty(r)?),
        (_, Some(Output::Yaml)) => print!("{}", serde_yaml::to_string(r)?),
        _ => {}
    }
    Ok(())
}

/// Run `mirror`.
pub async fn run(cli: &Cli, a: &MirrorArgs) -> anyhow::Result<()> {
    if let Some(b) = &a.verify_bundle {
        return verify_bundle(a, b).await;
    }
    let split = a
        .split
        .as_deref()
        .map(|s| match crate::spec::quantity::parse_bytes(s) {
            Ok(0) | Err(_) => Err(ExitError::usage(format!(
                "--split {s:?}: write the largest part size like 4G, 700M or 4Gi"
            ))),
            Ok(n) => Ok(n),
        })
        .transpose()?;
    let req = MirrorRequest {
        to: a.to.clone(),
        from: a.from.clone(),
        insecure_registries: a.insecure_registry.clone(),
        src_insecure: a.src_insecure,
        dest_insecure: a.dest_insecure,
        to_bundle: a.to_bundle.is_some(),
        from_bundle: a.from_bundle.is_some(),
    };
    let sel = select(cli, a, &req).await?;
    let MirrorPlan {
        target_assets,
        pairs,
        targets,
        insecure,
    } = ops::mirror::plan(&sel, &req)?;
    let mut opts = client_options_for(&target_assets, Vec::new(), &insecure, &a.ca_bundle)?;
    opts.attempts = a.retries.max(1);
    let client = RegistryClient::new(opts).map_err(usage)?;
    let copy_opts = CopyOptions {
        concurrency: a.concurrency.max(1),
        platforms: sel
            .platforms(&a.platform, a.to_bundle.is_some())
            .map_err(usage)?,
        progress: if a.no_progress {
            crate::report::Progress::hidden()
        } else {
            cli.terminal().progress()
        },
    };
    let files_to = a
        .files_to
        .as_deref()
        .map(FileTarget::parse)
        .transpose()
        .map_err(usage)?;

    if let Some(b) = &a.from_bundle {
        return import_bundle(a, b, &client, &target_assets, files_to.as_ref(), &copy_opts).await;
    }
    if let Some(out) = &a.to_bundle {
        let req = bundle::ExportRequest {
            clusters: &sel.cluster_names,
            images: &pairs,
            files: &sel.files,
            files_from: a.files_from.as_deref(),
            out,
            split,
        };
        let r = bundle::export(&client, &req, &copy_opts).await?;
        print_report(a, &r)?;
        let parts = match r.parts.len() {
            0 => String::new(),
            n => format!(
                " in {n} parts (+ {})",
                bundle::parts::sums_path(out).display()
            ),
        };
        eprintln!(
            "bundle {}: {} images ({} platforms), {} distinct blobs ({} fetched by this run), {} files, {:.1} MB{parts}, {:.2} s",
            out.display(),
            r.images,
            bundle::BundlePlatforms::describe(r.platforms.as_ref()),
            r.blobs,
            r.blobs_fetched,
            r.files,
            r.bytes as f64 / 1e6,
            r.millis as f64 / 1000.0
        );
        return Ok(());
    }
    copy_to_registries(
        a,
        &client,
        pairs,
        &targets,
        files_to.as_ref(),
        &sel.files,
        &copy_opts,
    )
    .await
}

/// What the flags select: an image list and/or clusters' catalogues (merged, each image
/// once), or a bundle (named later).
async fn select(cli: &Cli, a: &MirrorArgs, req: &MirrorRequest) -> anyhow::Result<Selection> {
    if a.from_bundle.is_some() {
        return Ok(Selection::default());
    }
    let several = a.cluster.len() > 1 || (!a.cluster.is_empty() && a.from_file.is_some());
    if a.to.is_none() && a.to_bundle.is_none() {
        if a.from_file.is_some() {
            return Err(ExitError::usage(
                "--from-file needs --to REGISTRY or --to-bundle FILE",
            ));
        }
        if several {
            return Err(ExitError::usage(
                "several clusters need --to REGISTRY or --to-bundle FILE; to copy each to its own mirror, run kprov mirror once per cluster",
            ));
        }
    }
    let mut parts = Vec::new();
    if !a.cluster.is_empty() || a.from_file.is_none() {
        let repo = Repo::new(open_store(cli.state.as_deref()).await?);
        let names = match a.cluster.is_empty() {
            true => vec![current_cluster(None, cli.name.as_deref(), &repo).await?],
            false => a.cluster.clone(),
        };
        for name in names {
            parts.push(Selection::cluster(&repo, &name).await?);
        }
    }
    if let Some(list) = &a.from_file {
        let names = req.naming(&Assets::default());
        parts.push(Selection::images(read_list(list, &names)?));
    }
    Ok(Selection::merge(parts))
}

/// `--verify-bundle FILE`: check a bundle where it is, print what it holds.
async fn verify_bundle(a: &MirrorArgs, b: &std::path::Path) -> anyhow::Result<()> {
    let p = b.to_path_buf();
    let r = tokio::task::spawn_blocking(move || bundle::verify(&p))
        .await?
        .map_err(usage)?;
    print_report(a, &r)?;
    eprintln!(
        "bundle {}: ok — {} images, {} blobs, {} files, {:.1} MB in {} part(s), platforms {}",
        r.bundle,
        r.images,
        r.blobs,
        r.files,
        r.bytes as f64 / 1e6,
        r.parts,
        r.platforms
    );
    Ok(())
}

/// `--from-bundle FILE`: load a bundle into the target registries (or list what would go where).
async fn import_bundle(
    a: &MirrorArgs,
    b: &std::path::Path,
    client: &RegistryClient,
    target_assets: &Assets,
    files_to: Option<&FileTarget>,
    copy_opts: &CopyOptions,
) -> anyhow::Result<()> {
    let target_of = |up: &str| crate::mirror::mapped(up, target_assets, "copied to");
    if a.dry_run {
        let opened = bundle::OpenBundle::check(b).map_err(usage)?;
        for i in &opened.index.images {
            println!(
                "{} -> {}",
                i.upstream,
                target_of(&i.upstream).map_err(usage)?
            );
        }
        for f in &opened.index.files {
            let to = files_to.map(|t| t.location(&f.upstream_url));
            println!(
                "{} -> {}",
                f.upstream_url,
                to.as_deref().unwrap_or("(not copied)")
            );
        }
        return Ok(());
    }
    let r = bundle::import(client, b, &target_of, files_to, copy_opts).await?;
    print_report(a, &r)?;
    if let Some(c) = &r.copy {
        eprintln!("bundle {}: {}", b.display(), c.summary());
    }
    eprintln!("bundle {}: {} files uploaded", b.display(), r.files);
    Ok(())
}

/// Copy the images to the target registries (and the files to --files-to), or with --dry-run
/// list what would go where.
async fn copy_to_registries(
    a: &MirrorArgs,
    client: &RegistryClient,
    pairs: Vec<(String, ImageRef)>,
    targets: &[String],
    files_to: Option<&FileTarget>,
    files_list: &[crate::mirror::catalogue::FileAsset],
    copy_opts: &CopyOptions,
) -> anyhow::Result<()> {
    let mut jobs = Vec::new();
    for ((_, src), t) in pairs.into_iter().zip(targets) {
        let mut target = ImageRef::parse(t).map_err(usage)?;
        if target.tag.is_none() && target.digest.is_none() {
            target.tag = src.tag.clone();
        }
        jobs.push(CopyJob {
            source: src,
            target,
        });
    }
    if a.dry_run {
        for j in &jobs {
            println!("{} -> {}", j.source, j.target);
        }
        if let Some(t) = files_to {
            for f in files_list {
                println!("{} -> {}", f.upstream_url, t.location(&f.upstream_url));
            }
        }
        return Ok(());
    }
    let report = copy_images(client, &jobs, copy_opts).await?;
    eprintln!("mirror: {}", report.summary());
    let mut files_report = None;
    if let Some(t) = files_to {
        let staging =
            std::env::temp_dir().join(format!("kprov-mirror-files-{}", std::process::id()));
        let out = files::mirror_files(
            client.http(),
            files_list,
            a.files_from.as_deref(),
            t,
            &staging,
        )
        .await;
        let _ = std::fs::remove_dir_all(&staging);
        let out = out?;
        let copied = bundle::count_copied(&out);
        eprintln!(
            "mirror: {copied} files copied, {} already present",
            out.len() - copied
        );
        files_report = Some((copied, out.len() - copied));
    } else if !files_list.is_empty() {
        eprintln!(
            "mirror: {} files not copied (pass --files-to s3://…|file://…|https://… to copy them)",
            files_list.len()
        );
    }
    if a.json || a.output.is_some() {
        /// The copy report, plus file counts when files were copied.
        #[derive(serde::Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            copy: &'a crate::mirror::copy::CopyReport,
            #[serde(skip_serializing_if = "Option::is_none")]
            files_copied: Option<usize>,
            #[serde(skip_serializing_if = "Option::is_none")]
            files_present: Option<usize>,
        }
        let j = Json {
            copy: &report,
            files_copied: files_report.map(|f| f.0),
            files_present: files_report.map(|f| f.1),
        };
        print_report(a, &j)?;
    }
    Ok(())
}
