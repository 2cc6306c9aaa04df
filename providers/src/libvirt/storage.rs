//! Storage on the libvirt host: the cluster's pool, the base image per architecture (hashed
//! to name it, uploaded once through a volume stream), and per node a copy-on-write root disk
//! and the NoCloud seed ISO.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use virt::connect::Connect;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use super::cloud::LibvirtCloud;
use super::domain::DirectBootPaths;
use super::errors::{is, not_found, verr};
use super::seed::{build_seed_iso, meta_data};
use super::xml::*;
use super::{cluster_object_name, volume_prefix, BaseImage, PROVIDER};
use crate::{Arch, CloudError, CloudResult, InstanceRequest};

/// One GiB in bytes.
const GIB: u64 = 1 << 30;

/// Virtual size of a qcow2 image from its header (bytes 24..32, big endian); `None` if the
/// file is not qcow2.
pub fn qcow2_virtual_size(path: &Path) -> std::io::Result<Option<u64>> {
    let mut f = std::fs::File::open(path)?;
    let mut h = [0u8; 32];
    if f.read_exact(&mut h).is_err() || &h[0..4] != b"QFI\xfb" {
        return Ok(None);
    }
    Ok(Some(u64::from_be_bytes(
        h[24..32].try_into().expect("8 bytes"),
    )))
}

/// What [`LibvirtCloud::upload_volume`] sends: a file on this machine, or bytes.
pub(super) enum Upload<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

impl LibvirtCloud {
    /// The storage pool of `cluster`: the configured one, else `kprov.CLUSTER`.
    pub(super) fn pool_name(&self, cluster: &str) -> String {
        self.cfg
            .pool
            .clone()
            .unwrap_or_else(|| cluster_object_name(cluster))
    }

    /// The configured base image of `arch`.
    pub(super) fn image(&self, arch: Arch) -> CloudResult<&BaseImage> {
        self.cfg.images.get(&arch).ok_or_else(|| {
            CloudError::fatal(
                PROVIDER,
                "NoImage",
                format!("no base image for {arch} in spec.provider.libvirt.images"),
                format!("set spec.provider.libvirt.images.{arch} to a qcow2 cloud image with cloud-init (see docs/providers/libvirt.md)"),
            )
        })
    }

    /// First 12 hex digits of the base image's SHA-256 (names its volume: a changed file is
    /// uploaded again under a new name).
    pub(super) fn image_id(&self, arch: Arch) -> CloudResult<String> {
        if let Some(id) = self
            .image_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&arch)
        {
            return Ok(id.clone());
        }
        let img = self.image(arch)?;
        let mut f = std::fs::File::open(&img.path).map_err(|e| {
            CloudError::fatal(
                PROVIDER,
                "ImageUnreadable",
                format!("base image {}: {e}", img.path.display()),
                "build or download the image first (tests/vm/build-image.sh)",
            )
        })?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| {
                CloudError::fatal(
                    PROVIDER,
                    "ImageUnreadable",
                    format!("{}: {e}", img.path.display()),
                    "check the file",
                )
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let id = hex::encode(h.finalize())[..12].to_string();
        self.image_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(arch, id.clone());
        Ok(id)
    }

    /// Make sure the pool exists and is active; returns it and its directory (dir pools).
    pub(super) fn ensure_pool(
        &self,
        conn: &Connect,
        cluster: &str,
    ) -> CloudResult<(StoragePool, Option<String>)> {
        let name = self.pool_name(cluster);
        let pool = match conn.lookup_storage_pool_by_name(&name) {
            Ok(p) => p,
            Err(e) if not_found(&e) && self.cfg.pool.is_some() => {
                return Err(CloudError::fatal(
                    PROVIDER,
                    "NoPool",
                    format!("storage pool {name:?} (spec.provider.libvirt.pool) does not exist"),
                    "create it (virsh pool-define-as …) or remove `pool` to let kprov create one per cluster",
                ))
            }
            Err(e) if not_found(&e) => {
                let dir = self
                    .cfg
                    .pool_dir
                    .clone()
                    .unwrap_or_else(|| format!("/var/lib/libvirt/images/{name}"));
                let doc = PoolXml { kind: "dir".into(), name: name.clone(), target: PathTarget { path: dir } };
                let x = to_xml(&doc).map_err(|e| CloudError::Protocol { provider: PROVIDER, message: e.to_string() })?;
                let p = match conn.define_storage_pool_xml(&x, 0) {
                    Ok(p) => p,
                    // another run defined it in between
                    Err(_) => conn.lookup_storage_pool_by_name(&name).map_err(|e| verr("defining pool", e))?,
                };
                if !self.is_test_driver() {
                    p.build(0).map_err(|e| verr(&format!("building pool {name}"), e))?;
                }
                let _ = p.set_autostart(true);
                p
            }
            Err(e) => return Err(verr("looking up pool", e)),
        };
        if !pool.is_active().unwrap_or(false) {
            pool.create(0)
                .map_err(|e| verr(&format!("starting pool {name}"), e))?;
        }
        let pxml = pool.xml_desc(0).unwrap_or_default();
        let is_dir = attrs_of(&pxml, "pool")
            .first()
            .and_then(|a| a.get("type"))
            .map(String::as_str)
            == Some("dir");
        let dir = is_dir
            .then(|| texts_of(&pxml, "path").into_iter().next())
            .flatten();
        Ok((pool, dir))
    }

    /// Upload `data` (a file or bytes) into a new raw volume `name` of `pool`. The `test:///`
    /// driver has no `virStorageVolUpload`: there the volume stays empty.
    pub(super) fn upload_volume(
        &self,
        conn: &Connect,
        pool: &StoragePool,
        name: &str,
        src: Upload<'_>,
    ) -> CloudResult<StorageVol> {
        if let Ok(old) = pool.lookup_storage_vol_by_name(name) {
            old.delete(0)
                .map_err(|e| verr(&format!("deleting stale volume {name}"), e))?;
        }
        let len = match &src {
            Upload::File(p) => std::fs::metadata(p)
                .map_err(|e| {
                    CloudError::fatal(
                        PROVIDER,
                        "FileUnreadable",
                        format!("{}: {e}", p.display()),
                        "check the path",
                    )
                })?
                .len(),
            Upload::Bytes(b) => b.len() as u64,
        };
        let doc = VolumeXml {
            name: name.into(),
            capacity: Capacity {
                unit: "bytes".into(),
                amount: len.max(1),
            },
            target: VolTarget {
                format: ModelType { kind: "raw".into() },
            },
            backing_store: None,
        };
        let x = to_xml(&doc).map_err(|e| CloudError::Protocol {
            provider: PROVIDER,
            message: e.to_string(),
        })?;
        let vol = StorageVol::create_xml(pool, &x, 0)
            .map_err(|e| verr(&format!("creating volume {name}"), e))?;
        let stream = Stream::new(conn, 0).map_err(|e| verr("opening a stream", e))?;
        match vol.upload(&stream, 0, len, 0) {
            Ok(()) => {}
            Err(e) if is(&e, ErrorNumber::NoSupport) && self.is_test_driver() => {
                tracing::debug!(
                    volume = name,
                    "test driver: no volume upload, volume left empty"
                );
                let _ = stream.abort();
                return Ok(vol);
            }
            Err(e) => return Err(verr(&format!("uploading volume {name}"), e)),
        }
        // an unfinished stream is aborted, so libvirtd drops its side of the transfer
        let sent_all = send_source(&stream, name, len, src);
        if let Err(e) = sent_all {
            let _ = stream.abort();
            return Err(e);
        }
        stream
            .finish()
            .map_err(|e| verr(&format!("finishing upload of {name}"), e))?;
        Ok(vol)
    }

    /// The base image volume of `arch` (uploaded once; the `.ok` marker volume is written after
    /// a complete upload, so a crash mid-upload causes a re-upload), plus kernel/initrd volume
    /// paths for direct boot.
    pub(super) fn ensure_base(
        &self,
        conn: &Connect,
        pool: &StoragePool,
        cluster: &str,
        arch: Arch,
        image_id: &str,
    ) -> CloudResult<(StorageVol, Option<DirectBootPaths>)> {
        let img = self.image(arch)?.clone();
        let base = format!("{}base-{arch}-{image_id}", volume_prefix(cluster));
        let marker = format!("{base}.ok");
        let vol_name = format!("{base}.qcow2");
        let done = pool.lookup_storage_vol_by_name(&marker).is_ok();
        let vol = match (done, pool.lookup_storage_vol_by_name(&vol_name)) {
            (true, Ok(v)) => v,
            _ => {
                let started = Instant::now();
                let v = self.upload_volume(conn, pool, &vol_name, Upload::File(&img.path))?;
                let mut boot_files = Vec::new();
                if let Some(db) = &img.direct_boot {
                    boot_files.push((format!("{base}.vmlinuz"), db.kernel.clone()));
                    boot_files.push((format!("{base}.initrd"), db.initrd.clone()));
                }
                for (n, p) in &boot_files {
                    self.upload_volume(conn, pool, n, Upload::File(p))?;
                }
                self.upload_volume(conn, pool, &marker, Upload::Bytes(b"ok\n"))?;
                tracing::info!(volume = %vol_name, secs = started.elapsed().as_secs_f64(), "base image uploaded");
                v
            }
        };
        let direct = match &img.direct_boot {
            Some(db) => {
                let k = pool
                    .lookup_storage_vol_by_name(&format!("{base}.vmlinuz"))
                    .map_err(|e| verr("kernel volume", e))?;
                let i = pool
                    .lookup_storage_vol_by_name(&format!("{base}.initrd"))
                    .map_err(|e| verr("initrd volume", e))?;
                Some((
                    k.path().map_err(|e| verr("kernel path", e))?,
                    i.path().map_err(|e| verr("initrd path", e))?,
                    db.cmdline.clone(),
                ))
            }
            None => None,
        };
        Ok((vol, direct))
    }

    /// The root disk of a node: a qcow2 overlay on `base`, sized to the instance group's root
    /// disk (at least the base image's size); one left by a crashed run is replaced.
    pub(super) fn create_root_volume(
        &self,
        pool: &StoragePool,
        req: &InstanceRequest,
        base: &StorageVol,
    ) -> CloudResult<String> {
        let prefix = volume_prefix(&req.cluster);
        // Root disk: a qcow2 overlay on the base, sized to the instance group's root disk.
        let base_size = qcow2_virtual_size(&self.image(req.arch)?.path)
            .ok()
            .flatten()
            .unwrap_or(2 * GIB);
        let want = req
            .root_disk_gib
            .map(|g| g as u64 * GIB)
            .unwrap_or(base_size);
        if want < base_size {
            return Err(CloudError::fatal(
                PROVIDER,
                "RootDiskTooSmall",
                format!(
                    "{}: root disk {} GiB is smaller than the base image ({} bytes)",
                    req.name,
                    want / GIB,
                    base_size
                ),
                "raise the instance group's rootVolumeSize",
            ));
        }
        let root = format!("{prefix}{}.root.qcow2", req.name);
        if let Ok(old) = pool.lookup_storage_vol_by_name(&root) {
            // left by a crashed run before the domain was defined: never booted, start afresh
            old.delete(0)
                .map_err(|e| verr(&format!("deleting stale volume {root}"), e))?;
        }
        let doc = VolumeXml {
            name: root.clone(),
            capacity: Capacity {
                unit: "bytes".into(),
                amount: want,
            },
            target: VolTarget {
                format: ModelType {
                    kind: "qcow2".into(),
                },
            },
            backing_store: Some(BackingStore {
                path: base.path().map_err(|e| verr("base volume path", e))?,
                format: ModelType {
                    kind: "qcow2".into(),
                },
            }),
        };
        let x = to_xml(&doc).map_err(|e| CloudError::Protocol {
            provider: PROVIDER,
            message: e.to_string(),
        })?;
        StorageVol::create_xml(pool, &x, 0)
            .map_err(|e| verr(&format!("creating root volume {root}"), e))?;
        Ok(root)
    }

    /// Build the node's NoCloud seed ISO (user-data and meta-data) and upload it as a volume;
    /// returns the volume's name.
    pub(super) fn upload_seed(
        &self,
        conn: &Connect,
        pool: &StoragePool,
        req: &InstanceRequest,
    ) -> CloudResult<String> {
        let prefix = volume_prefix(&req.cluster);
        // NoCloud seed
        let seed_name = format!("{prefix}{}.seed.iso", req.name);
        let iso = build_seed_iso(&req.user_data, &meta_data(&req.id, &req.name)).map_err(|e| {
            CloudError::Protocol {
                provider: PROVIDER,
                message: format!("building the seed ISO: {e}"),
            }
        })?;
        self.upload_volume(conn, pool, &seed_name, Upload::Bytes(&iso))?;
        Ok(seed_name)
    }
}

/// Send all of `src` (`len` bytes) down the upload `stream` of volume `name`, logging the
/// progress of a big upload every 2 s.
fn send_source(stream: &Stream, name: &str, len: u64, src: Upload<'_>) -> CloudResult<()> {
    let sent = std::cell::Cell::new(0u64);
    let (started, last_report) = (Instant::now(), std::cell::Cell::new(Instant::now()));
    let send_all = |chunk: &[u8]| -> CloudResult<()> {
        let mut off = 0;
        while off < chunk.len() {
            let n = stream
                .send(&chunk[off..])
                .map_err(|e| verr(&format!("uploading volume {name}"), e))?;
            if n <= 0 {
                return Err(CloudError::fatal(
                    PROVIDER,
                    "UploadFailed",
                    format!("uploading volume {name}: stream refused data"),
                    "see libvirtd's log",
                ));
            }
            off += n as usize;
        }
        sent.set(sent.get() + chunk.len() as u64);
        // a big upload (the base image) shows its progress with `-v`
        if last_report.get().elapsed() >= Duration::from_secs(2) {
            last_report.set(Instant::now());
            tracing::info!(
                "uploading volume {name}: {} of {} MiB ({:.0}%, {:.0}s)",
                sent.get() >> 20,
                len >> 20,
                100.0 * sent.get() as f64 / len.max(1) as f64,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    };
    match src {
        Upload::File(p) => {
            let unreadable = |e: std::io::Error| {
                CloudError::fatal(
                    PROVIDER,
                    "FileUnreadable",
                    format!("{}: {e}", p.display()),
                    "check the path",
                )
            };
            let mut f = std::fs::File::open(p).map_err(unreadable)?;
            let mut buf = vec![0u8; 4 << 20];
            loop {
                let n = f.read(&mut buf).map_err(unreadable)?;
                if n == 0 {
                    return Ok(());
                }
                send_all(&buf[..n])?;
            }
        }
        Upload::Bytes(b) => b.chunks(4 << 20).try_for_each(send_all),
    }
}
