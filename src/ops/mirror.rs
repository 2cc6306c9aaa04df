//! Planning a mirror run: which upstream images (and files) are copied, from where, to where,
//! and which registries speak plain HTTP. `kprov mirror` parses its flags into a
//! [`MirrorRequest`], gets a [`MirrorPlan`] from here and hands it to `crate::mirror` to copy.

use crate::assets::image_ref;
use crate::error::ExitError;
use crate::mirror::catalogue::FileAsset;
use crate::mirror::copy::PlatformFilter;
use crate::mirror::{Catalogue, ImageRef, MirrorError, Naming};
use crate::repo::Repo;
use crate::spec::{Arch, Assets};

/// What is mirrored: a cluster's catalogue, an image list, or (for a bundle import) nothing
/// named up front.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The cluster's `spec.assets` (default for an image list).
    pub cluster_assets: Assets,
    /// The clusters whose catalogues are mirrored (empty for an image list).
    pub cluster_names: Vec<String>,
    /// The CPU architectures of those clusters' instance groups (a bundle's default platforms).
    pub arches: Vec<Arch>,
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
            cluster_names: vec![name.to_string()],
            arches: s.config.arches(),
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

    /// Several selections as one (several clusters, or clusters plus an image list): each
    /// upstream image once (first-seen order), each file once, the union of architectures.
    /// The first cluster's `spec.assets` stands for all (they only name the source registry
    /// and its trust for a bundle, or are replaced by `--to`).
    pub fn merge(parts: Vec<Selection>) -> Selection {
        let mut out = Selection::default();
        let mut first = true;
        for p in parts {
            if first && !p.cluster_names.is_empty() {
                out.cluster_assets = p.cluster_assets.clone();
                first = false;
            }
            out.cluster_names.extend(p.cluster_names);
            out.arches.extend(p.arches);
            for u in p.upstreams {
                if !out.upstreams.contains(&u) {
                    out.upstreams.push(u);
                }
            }
            for f in p.files {
                if !out
                    .files
                    .iter()
                    .any(|g| g.upstream_url == f.upstream_url && g.arch == f.arch)
                {
                    out.files.push(f);
                }
            }
        }
        out.arches.sort();
        out.arches.dedup();
        out
    }

    /// The platforms a bundle of this selection holds: `--platform` when given, else the
    /// clusters' architectures (`linux/amd64`, `linux/arm64`), else (an image list alone)
    /// every platform (`None`). Copies to a registry keep every platform unless `--platform`
    /// says otherwise.
    pub fn platforms(
        &self,
        explicit: &[String],
        to_bundle: bool,
    ) -> Result<Option<PlatformFilter>, MirrorError> {
        if !explicit.is_empty() {
            return PlatformFilter::parse(explicit).map(Some);
        }
        if !to_bundle || self.arches.is_empty() {
            return Ok(None);
        }
        Ok(Some(PlatformFilter(
            self.arches.iter().map(|a| format!("linux/{a}")).collect(),
        )))
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
    /// Images go into a bundle (keeping their upstream names), not to registries.
    pub to_bundle: bool,
    /// A bundle is loaded: its images are named by the bundle, not by a selection.
    pub from_bundle: bool,
}

impl MirrorRequest {
    /// The cluster's mapping, or with `--to` a plain host-prefixed mirror in its place.
    pub fn target_assets(&self, cluster_assets: &Assets) -> Assets {
        match &self.to {
            Some(to) => Assets {
                container_registry: Some(to.clone()),
                insecure: self.dest_insecure || cluster_assets.insecure,
                ..Default::default()
            },
            None => cluster_assets.clone(),
        }
    }

    /// Where this run reads (`--from`, else upstream) and writes (nowhere by name for a bundle).
    pub fn naming(&self, cluster_assets: &Assets) -> Naming {
        Naming {
            source: self.from.as_ref().map(|f| Assets {
                container_registry: Some(f.clone()),
                ..Default::default()
            }),
            target: (!self.to_bundle).then(|| self.target_assets(cluster_assets)),
        }
    }
}

/// A mirror run, decided: per upstream image its source and target.
#[derive(Debug, Clone)]
pub struct MirrorPlan {
    /// The mapping targets are computed with.
    pub target_assets: Assets,
    /// `(upstream, source)` per image.
    pub pairs: Vec<(String, ImageRef)>,
    /// Target reference per image, in the order of `pairs` (none for a bundle).
    pub targets: Vec<String>,
    /// Registry hosts spoken to over plain HTTP.
    pub insecure: Vec<String>,
}

/// Decide sources and targets for `sel`; refuses (exit 2) images with no mirror location when
/// copying to registries.
pub fn plan(sel: &Selection, req: &MirrorRequest) -> anyhow::Result<MirrorPlan> {
    let target_assets = req.target_assets(&sel.cluster_assets);
    if !req.to_bundle && !req.from_bundle {
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
    // Every name, checked before anything is contacted.
    let names = req.naming(&sel.cluster_assets);
    let planned = sel
        .upstreams
        .iter()
        .map(|u| names.plan(u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    let sources: Vec<String> = planned.iter().map(|(s, _)| s.to_string()).collect();
    let targets: Vec<String> = planned
        .iter()
        .filter_map(|(_, t)| t.as_ref().map(ToString::to_string))
        .collect();
    let insecure = insecure_hosts(req, &sources, &targets, &target_assets);
    let pairs = sel
        .upstreams
        .iter()
        .cloned()
        .zip(planned.into_iter().map(|(s, _)| s))
        .collect();
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
