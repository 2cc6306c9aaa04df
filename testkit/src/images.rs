//! A deterministic generator of a Kubernetes-like multi-arch image set (OCI indexes and Docker
//! manifest lists, shared base layers, odd manifest formatting that a re-serialising copier
//! would change), with layers in memory or streamed from disk for huge ones.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::prng::Prng;

/// A blob to push: bytes in memory or a file on disk (for huge layers).
#[derive(Debug, Clone)]
pub enum BlobData {
    /// In memory.
    Bytes(Vec<u8>),
    /// On disk (streamed when pushed).
    File(PathBuf),
}

/// A blob with its digest and size.
#[derive(Debug, Clone)]
pub struct Blob {
    /// `sha256:…`.
    pub digest: String,
    /// Size.
    pub size: u64,
    /// Content.
    pub data: BlobData,
}

/// A manifest as generated (exact bytes).
#[derive(Debug, Clone)]
pub struct GenManifest {
    /// Bytes.
    pub bytes: Vec<u8>,
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: String,
}

impl GenManifest {
    fn new(bytes: String, media_type: &str) -> GenManifest {
        let bytes = bytes.into_bytes();
        GenManifest {
            digest: digest(&bytes),
            bytes,
            media_type: media_type.into(),
        }
    }
}

/// One image: repository (upstream path incl. host, e.g. `registry.k8s.io/pause`) and tag.
#[derive(Debug, Clone)]
pub struct GenImage {
    /// Repository path in the upstream test registry.
    pub repo: String,
    /// Tag.
    pub tag: String,
    /// The top manifest (index, list or single manifest).
    pub top: GenManifest,
    /// Platform manifests.
    pub children: Vec<GenManifest>,
    /// Blobs of this image.
    pub blobs: Vec<String>,
}

/// A generated set.
#[derive(Debug, Clone, Default)]
pub struct ImageSet {
    /// Images.
    pub images: Vec<GenImage>,
    /// All blobs by digest (shared ones once).
    pub blobs: BTreeMap<String, Blob>,
}

impl ImageSet {
    /// Total bytes of distinct blobs.
    pub fn total_bytes(&self) -> u64 {
        self.blobs.values().map(|b| b.size).sum()
    }
    /// `repo:tag` of every image.
    pub fn references(&self) -> Vec<String> {
        self.images
            .iter()
            .map(|i| format!("{}:{}", i.repo, i.tag))
            .collect()
    }
}

/// `sha256:` of bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A gzip-compressed tar layer with one file of `size` pseudo-random bytes, written to `w`.
pub fn write_layer(seed: &str, size: u64, w: impl Write) -> std::io::Result<()> {
    let gz = flate2::write::GzEncoder::new(w, flate2::Compression::none());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    struct Gen(Prng, u64);
    impl std::io::Read for Gen {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (buf.len() as u64).min(self.1) as usize;
            self.0.fill(&mut buf[..n]);
            self.1 -= n as u64;
            Ok(n)
        }
    }
    tar.append_data(
        &mut header,
        format!("data/{}", seed.replace(['/', ':'], "_")),
        Gen(Prng::new(seed), size),
    )?;
    tar.into_inner()?.finish()?.flush()
}

fn layer(seed: &str, size: u64, dir: Option<&Path>) -> Blob {
    match dir {
        Some(d) if size > 64 * 1024 * 1024 => {
            let path = d.join(format!(
                "layer-{}",
                digest(seed.as_bytes()).trim_start_matches("sha256:")
            ));
            struct HashW<W: Write>(W, Sha256, u64);
            impl<W: Write> Write for HashW<W> {
                fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                    let n = self.0.write(b)?;
                    self.1.update(&b[..n]);
                    self.2 += n as u64;
                    Ok(n)
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    self.0.flush()
                }
            }
            let f = std::io::BufWriter::new(std::fs::File::create(&path).expect("layer file"));
            let mut hw = HashW(f, Sha256::new(), 0);
            write_layer(seed, size, &mut hw).expect("write layer");
            hw.flush().expect("flush");
            Blob {
                digest: format!("sha256:{}", hex::encode(hw.1.clone().finalize())),
                size: hw.2,
                data: BlobData::File(path),
            }
        }
        _ => {
            let mut v = Vec::new();
            write_layer(seed, size, &mut v).expect("layer");
            Blob {
                digest: digest(&v),
                size: v.len() as u64,
                data: BlobData::Bytes(v),
            }
        }
    }
}

/// Sizes of a generated set.
#[derive(Debug, Clone)]
pub struct SetSizes {
    /// Shared base layer per arch.
    pub base: u64,
    /// Unique layer per image and arch.
    pub unique: u64,
    /// Directory for layers over 64 MiB (streamed from disk).
    pub dir: Option<PathBuf>,
}

impl SetSizes {
    /// Small set for tests (~1.5 MB for 11 images).
    pub fn small() -> SetSizes {
        SetSizes {
            base: 128 * 1024,
            unique: 24 * 1024,
            dir: None,
        }
    }
}

/// Generate images for `refs` (`host/path:tag`, used as repository path in the test upstream).
/// Every image is multi-arch (amd64 + arm64), alternating OCI index and Docker manifest list,
/// except those whose reference contains `single`, which get one OCI manifest. Each arch has a
/// base layer shared by all images. Manifests are written with an odd key order and 3-space
/// indentation, unlike serde's output, so a re-serialising copier changes their digests.
pub fn generate(refs: &[&str], sizes: &SetSizes) -> ImageSet {
    let mut set = ImageSet::default();
    let arches = ["amd64", "arm64"];
    let bases: Vec<Blob> = arches
        .iter()
        .map(|a| layer(&format!("base-{a}"), sizes.base, sizes.dir.as_deref()))
        .collect();
    for b in &bases {
        set.blobs.insert(b.digest.clone(), b.clone());
    }
    for (n, r) in refs.iter().enumerate() {
        let (repo, tag) = r.rsplit_once(':').expect("tag");
        let docker = n % 2 == 1;
        let (man_t, cfg_t, lay_t, idx_t) = if docker {
            (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "application/vnd.docker.distribution.manifest.list.v2+json",
            )
        } else {
            (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.oci.image.index.v1+json",
            )
        };
        let single = r.contains("single");
        let mut children = Vec::new();
        let mut blobs = Vec::new();
        for (ai, arch) in arches.iter().enumerate() {
            if single && ai > 0 {
                break;
            }
            let base = &bases[ai];
            let uniq = layer(&format!("{r}-{arch}"), sizes.unique, sizes.dir.as_deref());
            let config = format!(
                "{{\"architecture\":\"{arch}\",\"os\":\"linux\",\"config\":{{\"Cmd\":[\"/{}\"]}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}},\"created\":\"1970-01-01T00:00:00Z\"}}",
                repo.rsplit('/').next().unwrap_or(repo)
            );
            let cfg = Blob {
                digest: digest(config.as_bytes()),
                size: config.len() as u64,
                data: BlobData::Bytes(config.into_bytes()),
            };
            let m = format!(
                "{{\n   \"layers\": [\n      {{\"size\": {},   \"digest\": \"{}\", \"mediaType\": \"{lay_t}\"}},\n      {{\"size\": {},   \"digest\": \"{}\", \"mediaType\": \"{lay_t}\"}}\n   ],\n   \"config\": {{ \"digest\": \"{}\", \"size\": {}, \"mediaType\": \"{cfg_t}\" }},\n   \"mediaType\": \"{man_t}\",\n   \"schemaVersion\": 2\n}}\n",
                base.size, base.digest, uniq.size, uniq.digest, cfg.digest, cfg.size
            );
            let gm = GenManifest::new(m, man_t);
            for b in [base.clone(), uniq, cfg] {
                blobs.push(b.digest.clone());
                set.blobs.insert(b.digest.clone(), b);
            }
            children.push((arch.to_string(), gm));
        }
        let top = if single {
            children.remove(0).1
        } else {
            let entries: Vec<String> = children
                .iter()
                .map(|(arch, m)| {
                    format!(
                        "    {{ \"platform\": {{\"os\": \"linux\", \"architecture\": \"{arch}\"}},\n      \"size\": {},\n      \"mediaType\": \"{man_t}\",\n      \"digest\": \"{}\" }}",
                        m.bytes.len(),
                        m.digest
                    )
                })
                .collect();
            GenManifest::new(
                format!(
                    "{{ \"mediaType\": \"{idx_t}\",\n  \"manifests\": [\n{}\n  ],\n  \"schemaVersion\": 2 }}",
                    entries.join(",\n")
                ),
                idx_t,
            )
        };
        set.images.push(GenImage {
            repo: repo.to_string(),
            tag: tag.to_string(),
            top,
            children: children.into_iter().map(|(_, m)| m).collect(),
            blobs,
        });
    }
    set
}

/// The 11-reference Kubernetes-like set the registry lab describes (core images, CNI, add-ons,
/// one single-platform image).
pub const K8S_LIKE: &[&str] = &[
    "registry.k8s.io/kube-apiserver:v1.33.13",
    "registry.k8s.io/kube-controller-manager:v1.33.13",
    "registry.k8s.io/kube-scheduler:v1.33.13",
    "registry.k8s.io/kube-proxy:v1.33.13",
    "registry.k8s.io/pause:3.10",
    "registry.k8s.io/etcd:3.5.24-0",
    "registry.k8s.io/coredns/coredns:v1.12.0",
    "ghcr.io/flannel-io/flannel:v0.28.9",
    "quay.io/metallb/speaker:v0.16.1",
    "nvcr.io/nvidia/k8s-device-plugin:v0.20.0",
    "docker.io/library/single-arch-tool:1.0-single",
];
