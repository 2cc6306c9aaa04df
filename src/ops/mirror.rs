//! Planning a mirror run: which upstream images (and files) are copied, from where, to where,
//! and which registries speak plain HTTP. `kprov mirror` parses its flags into a
//! [`MirrorRequest`], gets a [`MirrorPlan`] from here and hands it to `crate::mirror` to copy.

use crate::assets::image_ref;
use crate::error::ExitError;
use crate::mirror::catalogue::FileAsset;
use crate::mirror::{Catalogue, ImageRef, MirrorError};
use crate::repo::Repo;
use crate::spec::Assets;

/// What is mirrored: a cluster's catalogue, an image list, or (for a bundle import) nothing
/// named up front.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The cluster's `spec.assets` (default for an image list).
    pub cluster_assets: Assets,
    /// The cluster, when its catalogue is mirrored.
    pub cluster_name: Option<String>,
    /// Files of the catalogue.
    pub files: Vec<FileAsset>,
    /// Upstream image references.
    pub upstreams: Vec<String>,
}

impl Selection {
    /// Cluster `name`'s catalogue, as its nodes will pull it.
    pub async fn cluster(repo: &Repo, name: &str) -> anyhow::Result<Selection> {
        let s = repo.require(name).await?;
        let cat = Catalogue::for_cluster_as_rendered(&s.config).map_err(usage)?;
        Ok(Selection {
            cluster_assets: s.config.cluster.spec.assets.clone(),
            cluster_name: Some(name.to_string()),
            files: cat.files.clone(),
            upstreams: cat.images.iter().map(|i| i.upstream.clone()).collect(),
        })
    }

    /// An image list (`--from-file`), already parsed.
    pub fn images(upstreams: Vec<String>) -> Selection {
        Selection {
            upstreams,
            ..Default::default()
        }
    }
}

/// Where the images come from and go to, and how the registries are spoken to.
#[derive(Debug, Clone, Default)]
pub struct MirrorRequest {
    /// Target registry `host[:port][/prefix]` replacing the cluster's mapping (`--to`).
    pub to: Option<String>,
    /// Registry laid out like a kprov mirror to pull from instead of upstream (`--from`).
    pub from: Option<String>,
    /// Registry hosts spoken to over plain HTTP (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// The sources speak plain HTTP (`--src-insecure`).
    pub src_insecure: bool,
    /// The target speaks plain HTTP (`--dest-insecure`).
    pub dest_insecure: bool,
    /// Targets are registries (not a bundle): every image needs a mirror location.
    pub to_registries: bool,
}

/// A mirror run, decided: per upstream image its source and target.
#[derive(Debug, Clone)]
pub struct MirrorPlan {
    /// The mapping targets are computed with.
    pub target_assets: Assets,
    /// `(upstream, source)` per image.
    pub pairs: Vec<(String, ImageRef)>,
    /// Target reference per image, in the order of `pairs`.
    pub targets: Vec<String>,
    /// Registry hosts spoken to over plain HTTP.
    pub insecure: Vec<String>,
}

/// Decide sources and targets for `sel`; refuses (exit 2) images with no mirror location when
/// copying to registries.
pub fn plan(sel: &Selection, req: &MirrorRequest) -> anyhow::Result<MirrorPlan> {
    // --to replaces the cluster's mapping with a plain host-prefixed mirror.
    let target_assets = match &req.to {
        Some(to) => Assets {
            container_registry: Some(to.clone()),
            insecure: req.dest_insecure || sel.cluster_assets.insecure,
            ..Default::default()
        },
        None => sel.cluster_assets.clone(),
    };
    if req.to_registries {
        let unmapped: Vec<&String> = sel
            .upstreams
            .iter()
            .filter(|u| image_ref(u, &target_assets) == **u)
            .collect();
        if let Some(first) = unmapped.first() {
            return Err(ExitError::usage(format!(
                "no mirror location for {first} (and {} more): the cluster has no assets.containerRegistry / mappings for them; pass --to REGISTRY",
                unmapped.len() - 1
            )));
        }
    }
    let source_assets = req.from.as_ref().map(|f| Assets {
        container_registry: Some(f.clone()),
        ..Default::default()
    });
    let sources: Vec<String> = sel
        .upstreams
        .iter()
        .map(|u| match &source_assets {
            Some(s) => image_ref(u, s),
            None => u.clone(),
        })
        .collect();
    let targets: Vec<String> = sel
        .upstreams
        .iter()
        .map(|u| image_ref(u, &target_assets))
        .collect();
    let insecure = insecure_hosts(req, &sources, &targets, &target_assets);
    let mut pairs = Vec::new();
    for (up, src) in sel.upstreams.iter().zip(&sources) {
        pairs.push((up.clone(), ImageRef::parse(src).map_err(usage)?));
    }
    Ok(MirrorPlan {
        target_assets,
        pairs,
        targets,
        insecure,
    })
}

/// Registries spoken to over plain HTTP: those named by --insecure-registry, plus every source
/// (--src-insecure) or target (--dest-insecure, assets.insecure) registry when asked.
fn insecure_hosts(
    req: &MirrorRequest,
    sources: &[String],
    targets: &[String],
    target_assets: &Assets,
) -> Vec<String> {
    let registries = |refs: &[String]| -> Vec<String> {
        refs.iter()
            .filter_map(|s| ImageRef::parse(s).ok())
            .map(|r| r.registry)
            .collect()
    };
    let mut insecure = req.insecure_registries.clone();
    if req.src_insecure {
        insecure.extend(registries(sources));
        insecure.extend(req.from.as_deref().map(host_of));
    }
    if req.dest_insecure || target_assets.insecure {
        insecure.extend(registries(targets));
        insecure.extend(req.to.as_deref().map(host_of));
    }
    insecure
}

fn host_of(location: &str) -> String {
    location.split('/').next().unwrap_or(location).to_string()
}

/// A usage error stays one (exit 2); others keep their type.
pub fn usage(e: MirrorError) -> anyhow::Error {
    match e {
        MirrorError::Usage(m) => ExitError::usage(m),
        other => other.into(),
    }
}
