//! Asset catalogue and mirroring for restricted networks.
//!
//! * [`catalogue`]: exactly the images and files a rendered cluster pulls, with their upstream and
//!   mirror locations (computed with [`crate::assets`], the one mapping the bootstrap also uses).
//! * [`registry`]: a small OCI distribution client on reqwest (bearer token flow, custom CA,
//!   plain HTTP only for registries named insecure).
//! * [`credentials`]: registry credentials from the docker `config.json`, running its
//!   credential helpers (`credsStore`, `credHelpers`) as docker does.
//! * [`copy`]: the copy engine: manifests byte-for-byte, blobs streamed and verified, skip by
//!   HEAD, cross-repository mounts, bounded concurrency, retries.
//! * [`files`]: binaries downloaded with SHA-256 checked, uploaded to S3, a directory or HTTP PUT.
//! * [`bundle`]: offline bundles (an OCI image layout plus files and an index, in one tar).
//!
//! See `docs/mirror.md`.

pub mod bundle;
pub mod catalogue;
pub mod copy;
pub mod credentials;
pub mod files;
pub mod manifest;
pub mod registry;

pub use catalogue::{Catalogue, FileAsset, ImageAsset};

use std::fmt;

use crate::assets::ImageName;
use crate::spec::Assets;

/// Everything mirroring can fail on. Messages name the image, blob or file and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// A registry could not be reached at all (connection refused, DNS, TLS).
    #[error("cannot reach registry {registry} ({url}): {message}; {fix}")]
    Unreachable {
        /// Registry host.
        registry: String,
        /// URL tried.
        url: String,
        /// What failed.
        message: String,
        /// What to do.
        fix: String,
    },
    /// The image (tag or digest) does not exist at the source.
    #[error("image {image} not found (HTTP 404 from {registry}); check the reference, or mirror it into {registry} first")]
    NotFound {
        /// The reference.
        image: String,
        /// Registry asked.
        registry: String,
    },
    /// The registry refused our credentials, or has none for us.
    #[error("registry {registry} refused access to {what} (HTTP {status}): {message}; log in with `docker login {registry}` (credentials are read from $DOCKER_CONFIG/config.json or ~/.docker/config.json)")]
    Auth {
        /// Registry host.
        registry: String,
        /// What was asked for.
        what: String,
        /// HTTP status.
        status: u16,
        /// Registry's message.
        message: String,
    },
    /// A docker credential helper (`credsStore` / `credHelpers`) failed: kprov stops instead of
    /// going on anonymously with a registry the user configured credentials for.
    #[error("credential helper {helper} failed for registry {registry}: {problem}; {fix}")]
    CredentialHelper {
        /// `docker-credential-NAME`.
        helper: String,
        /// Registry host.
        registry: String,
        /// What went wrong (never a secret).
        problem: String,
        /// What to do.
        fix: String,
    },
    /// Bytes did not hash to the digest they were fetched by.
    #[error("{what}: content hashes to {actual}, expected {expected}; the source served corrupt or tampered data, nothing was stored under {expected}")]
    DigestMismatch {
        /// Which blob/manifest/file, and from where.
        what: String,
        /// Expected digest.
        expected: String,
        /// Digest of the bytes received.
        actual: String,
    },
    /// A blob or file had another size than its descriptor says.
    #[error("{what}: got {actual} bytes, the descriptor says {expected}; the source is corrupt or the transfer was cut")]
    SizeMismatch {
        /// Which blob or file.
        what: String,
        /// Size from the descriptor.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// The target refused to store something (read-only registry, disk full, quota).
    #[error("{target} refused to store {what} (HTTP {status}: {message}); the target is read-only or out of space: free space or make it writable, then re-run — finished blobs and manifests are kept and skipped")]
    WriteRefused {
        /// Target registry / location.
        target: String,
        /// What was being written.
        what: String,
        /// HTTP status (0 for local I/O).
        status: u16,
        /// Registry's message.
        message: String,
    },
    /// Any other unexpected HTTP answer.
    #[error("{what}: HTTP {status} from {url}: {message}")]
    Http {
        /// What was being done.
        what: String,
        /// URL.
        url: String,
        /// The HTTP status code the remote side answered with (0: no answer).
        status: u16,
        /// Body excerpt.
        message: String,
    },
    /// A manifest kprov cannot copy (unknown media type, schema 1, malformed JSON).
    #[error("manifest of {image}: {message}")]
    Manifest {
        /// The image.
        image: String,
        /// What is wrong.
        message: String,
    },
    /// Local file I/O. (The I/O error is part of the message, not a `source`, so that the CLI's
    /// error chain does not print it twice.)
    #[error("{path}: {error}; {}", io_fix(error))]
    Io {
        /// File or directory.
        path: String,
        /// The error.
        error: std::io::Error,
    },
    /// An offline bundle is corrupt or incomplete.
    #[error("bundle {bundle}: entry {entry}: {problem}; re-create the bundle with `kprov mirror NAME --to-bundle FILE` (it resumes) and copy it again")]
    Bundle {
        /// The bundle file.
        bundle: String,
        /// The bad entry.
        entry: String,
        /// What is wrong.
        problem: String,
    },
    /// A part of a split bundle (or its `SHA256SUMS` list) is missing, corrupt or unlisted.
    #[error("{part} {problem}")]
    BundlePart {
        /// The part (or list) file.
        part: String,
        /// What is wrong, and the fix.
        problem: String,
    },
    /// A file download or upload failed.
    #[error("file {url}: {message}")]
    File {
        /// Upstream or target URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// Bad arguments or settings.
    #[error("{0}")]
    Usage(String),
}

impl MirrorError {
    /// Wrap an I/O error with its path.
    pub fn io(path: impl fmt::Display, source: std::io::Error) -> MirrorError {
        MirrorError::Io {
            path: path.to_string(),
            error: source,
        }
    }

    /// Is this worth retrying (the network or the server hiccuped)?
    pub fn is_transient(&self) -> bool {
        match self {
            MirrorError::Unreachable { .. } => true,
            MirrorError::Http { status, .. } => *status == 0 || *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// A parsed image reference: registry host, repository, and tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// Registry host as written (`registry.k8s.io`, `127.0.0.1:5000`, `docker.io`).
    pub registry: String,
    /// Repository path (`pause`, `coredns/coredns`, `library/nginx`).
    pub repository: String,
    /// Tag, if any.
    pub tag: Option<String>,
    /// `sha256:…` digest, if any.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parse `[host[:port]/]path[:tag][@sha256:…]` with the same rules as
    /// [`crate::assets::ImageName`] (so catalogue and bootstrap agree on what the host is: a
    /// first segment with `.` or `:` or `localhost`; the tag is after the last `:` of the last
    /// segment, so `harbor.corp:8443/app/web:1.0` is host `harbor.corp:8443`, tag `1.0`). A
    /// reference without tag or digest means `:latest`, as for container runtimes. Only names
    /// registries accept parse ([`crate::assets::check_image_name`]), so whatever plans with an
    /// `ImageRef` learns of a bad name before anything is copied.
    pub fn parse(reference: &str) -> Result<ImageRef, MirrorError> {
        let r = reference.trim();
        let bad = |why: &str| {
            MirrorError::Usage(format!(
                "image reference {r:?}: {why}; write it as HOST/PATH:TAG or HOST/PATH@sha256:DIGEST"
            ))
        };
        if r.is_empty() || r.chars().any(char::is_whitespace) {
            return Err(bad("empty or contains whitespace"));
        }
        let n = ImageName::parse(r);
        let (tag_part, digest) = match n.suffix.split_once('@') {
            Some((t, d)) => (t, Some(d.to_string())),
            None => (n.suffix.as_str(), None),
        };
        let tag = tag_part
            .strip_prefix(':')
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if let Some(d) = &digest {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or_else(|| bad("only sha256 digests are supported"))?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("the digest must be sha256: and 64 hex digits"));
            }
        }
        if n.path.is_empty() || n.path.starts_with('/') || n.path.ends_with('/') {
            return Err(bad("empty repository path"));
        }
        crate::assets::check_image_name(r).map_err(|p| {
            MirrorError::Usage(format!(
                "image reference {r:?}: {}; fix: {}",
                p.problem, p.fix
            ))
        })?;
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(ImageRef {
            registry: n.host,
            repository: n.path,
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same repository at another reference (a digest or tag).
    pub fn with_reference(&self, tag: Option<String>, digest: Option<String>) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag,
            digest,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Where one `kprov mirror` run reads each upstream image from and writes it to. Every mode
/// (a cluster's catalogue, `--from-file`, `--to-bundle`, `--from-bundle`, `--dry-run`) plans
/// its names with [`Naming::plan`], so a name a registry would refuse stops the run, naming
/// the upstream reference, before anything is copied.
#[derive(Debug, Clone, Default)]
pub struct Naming {
    /// `--from`: a kprov-style mirror to read from; `None` reads from upstream.
    pub source: Option<Assets>,
    /// Where images are written (`--to`, or the cluster's mapping); `None` when they keep their
    /// upstream names (a bundle).
    pub target: Option<Assets>,
}

impl Naming {
    /// The source and (unless writing a bundle) the target of `upstream`, each checked.
    pub fn plan(&self, upstream: &str) -> Result<(ImageRef, Option<ImageRef>), MirrorError> {
        let up = ImageRef::parse(upstream)?;
        let source = match &self.source {
            Some(s) => mapped(upstream, s, "read from")?,
            None => up,
        };
        let target = match &self.target {
            Some(t) => Some(mapped(upstream, t, "copied to")?),
            None => None,
        };
        Ok((source, target))
    }
}

/// `upstream` mapped with `assets`, or why registries would refuse the mapped name.
pub fn mapped(upstream: &str, assets: &Assets, what: &str) -> Result<ImageRef, MirrorError> {
    let name = crate::assets::image_ref(upstream, assets);
    if let Err(p) = crate::assets::check_image_name(&name) {
        return Err(MirrorError::Usage(format!(
            "{upstream} would be {what} {name}, a name registries refuse: {}; fix: {}",
            p.problem, p.fix
        )));
    }
    ImageRef::parse(&name)
}

/// `sha256:HEX` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// How to fix a local I/O error, by its kind.
fn io_fix(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => "check the path",
        PermissionDenied => "check the permissions of the file and its directory",
        AlreadyExists => "remove it or choose another path",
        StorageFull => "free some disk space and re-run (the copy resumes)",
        ReadOnlyFilesystem => "choose a writable location",
        _ => "check the file and re-run (the copy resumes)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_parse_like_the_asset_mapping() {
        let r = ImageRef::parse("127.0.0.1:5000/registry.k8s.io/coredns/coredns:v1.11.3").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "registry.k8s.io/coredns/coredns");
        assert_eq!(r.tag.as_deref(), Some("v1.11.3"));
        assert_eq!(
            r.to_string(),
            "127.0.0.1:5000/registry.k8s.io/coredns/coredns:v1.11.3"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("quay.io/x/y:1@{d}")).unwrap();
        assert_eq!(r.reference(), d);
        assert_eq!(
            ImageRef::parse("nginx").unwrap().to_string(),
            "docker.io/library/nginx:latest"
        );
        assert!(ImageRef::parse("quay.io/x@sha256:abc").is_err());
        assert!(ImageRef::parse("a b").is_err());
    }

    #[test]
    fn an_upstream_with_a_port_keeps_its_port_apart_from_the_tag() {
        let r = ImageRef::parse("harbor.corp:8443/app/web:1.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("harbor.corp:8443", "app/web", Some("1.0"))
        );
        let r = ImageRef::parse("harbor.corp:8443/web").unwrap();
        assert_eq!((r.repository.as_str(), r.reference()), ("web", "latest"));
        let d = format!("sha256:{}", "c".repeat(64));
        let r = ImageRef::parse(&format!("localhost:5000/a/b@{d}")).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("localhost:5000", None)
        );
        assert!(ImageRef::parse("[::1]:5000/app/web:1.0")
            .unwrap_err()
            .to_string()
            .contains("IPv6"));
        assert!(ImageRef::parse("harbor.corp:8443/App/web:1.0").is_err());
    }

    #[test]
    fn naming_plans_checked_sources_and_targets() {
        let at = |r: &str| Assets {
            container_registry: Some(r.into()),
            ..Default::default()
        };
        let n = Naming {
            source: Some(at("127.0.0.1:5002")),
            target: Some(at("127.0.0.1:5001")),
        };
        let (src, to) = n.plan("127.0.0.1:5000/app/web:1.0").unwrap();
        assert_eq!(src.to_string(), "127.0.0.1:5002/127.0.0.1_5000/app/web:1.0");
        assert_eq!(
            to.unwrap().to_string(),
            "127.0.0.1:5001/127.0.0.1_5000/app/web:1.0"
        );
        let bundle = Naming::default();
        let (src, to) = bundle.plan("harbor.corp:8443/app/web:1.0").unwrap();
        assert_eq!(src.to_string(), "harbor.corp:8443/app/web:1.0");
        assert!(to.is_none());
        // A target prefix that makes the name too long is refused naming the upstream.
        let n = Naming {
            source: None,
            target: Some(at(&format!("m.local/{}", "p".repeat(240)))),
        };
        let e = n
            .plan("harbor.corp:8443/app/web:1.0")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("harbor.corp:8443/app/web:1.0 would be copied to m.local/ppp")
                && e.contains("characters long")
                && e.contains("fix: "),
            "{e}"
        );
    }
}
