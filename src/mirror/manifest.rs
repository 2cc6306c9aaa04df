//! OCI and Docker manifests as mirroring sees them: media types, the raw bytes as served (never
//! re-serialised: their digest is their identity), the descriptors read out of them, and the
//! platform filter applied to indexes.

use serde::Deserialize;

use super::MirrorError;

/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest (schema 2) media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// `Accept` for manifest requests: every type kprov copies, so a registry never down-converts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// Largest manifest accepted (the distribution spec's recommended limit), so a broken server
/// cannot make kprov buffer an unbounded body.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// What `HEAD` of a manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// `Docker-Content-Digest`.
    pub digest: Option<String>,
    /// `Content-Type`.
    pub media_type: Option<String>,
}

/// A manifest as served: its exact bytes, media type and digest (of those bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawManifest {
    /// The bytes, never re-serialised.
    pub bytes: Vec<u8>,
    /// Media type (the `mediaType` field, else `Content-Type`).
    pub media_type: String,
    /// `sha256:` of `bytes`.
    pub digest: String,
}

/// A descriptor inside a manifest or index.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: Option<String>,
    /// `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries).
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Foreign-layer URLs (such layers are not stored in registries and are not copied).
    #[serde(default)]
    pub urls: Option<Vec<String>>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    /// GOARCH.
    pub architecture: String,
    /// GOOS.
    pub os: String,
    /// CPU variant (`v8`).
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// `os/arch[/variant]`.
    pub fn to_filter_string(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// What a manifest refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An OCI index or Docker manifest list.
    Index(Vec<Descriptor>),
    /// An image manifest: config and layers.
    Image {
        /// Config blob.
        config: Descriptor,
        /// Layers, in order.
        layers: Vec<Descriptor>,
    },
}

/// The `mediaType` field of a manifest, if it has one.
pub fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct M {
        #[serde(default)]
        media_type: Option<String>,
    }
    serde_json::from_slice::<M>(bytes).ok()?.media_type
}

/// Read the descriptors out of a manifest (never re-serialising it).
pub fn parse_manifest(image: &str, m: &RawManifest) -> Result<Parsed, MirrorError> {
    let bad = |message: String| MirrorError::Manifest {
        image: image.to_string(),
        message,
    };
    let doc: ManifestDoc =
        serde_json::from_slice(&m.bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    if doc.schema_version == Some(1) {
        return Err(bad("Docker schema 1 manifests are deprecated and not copied; re-push the image with a current client".into()));
    }
    let mt = doc
        .media_type
        .clone()
        .unwrap_or_else(|| m.media_type.clone());
    if let Some(list) = doc.manifests {
        if !mt.is_empty() && mt != OCI_INDEX && mt != DOCKER_LIST {
            return Err(bad(format!("index with unexpected media type {mt}")));
        }
        return Ok(Parsed::Index(list));
    }
    if let (Some(config), Some(layers)) = (doc.config, doc.layers) {
        if !mt.is_empty() && mt != OCI_MANIFEST && mt != DOCKER_MANIFEST {
            return Err(bad(format!("unsupported media type {mt}")));
        }
        return Ok(Parsed::Image { config, layers });
    }
    Err(bad(format!(
        "neither an index nor an image manifest (media type {mt:?})"
    )))
}

/// A `--platform` filter: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformFilter(pub Vec<String>);

impl PlatformFilter {
    /// Parse `linux/amd64,linux/arm64`.
    pub fn parse(list: &[String]) -> Result<PlatformFilter, MirrorError> {
        let mut out = Vec::new();
        for p in list
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let parts: Vec<&str> = p.split('/').collect();
            if !(2..=3).contains(&parts.len()) || parts.iter().any(|x| x.is_empty()) {
                return Err(MirrorError::Usage(format!(
                    "--platform {p:?}: write it as OS/ARCH[/VARIANT], e.g. linux/arm64"
                )));
            }
            if parts[0] != "linux" || !matches!(parts[1], "amd64" | "arm64") {
                return Err(MirrorError::Usage(format!(
                    "--platform {p:?}: kprov's clusters run linux/amd64 and linux/arm64 nodes only; use one of those (e.g. linux/arm64)"
                )));
            }
            out.push(p.to_string());
        }
        Ok(PlatformFilter(out))
    }

    /// Does the filter keep this index entry? (A filter without variant keeps every variant.)
    pub fn keeps(&self, p: Option<&Platform>) -> bool {
        let Some(p) = p else { return false };
        self.0
            .iter()
            .any(|f| f == &p.to_filter_string() || *f == format!("{}/{}", p.os, p.architecture))
    }
}
