//! Reading a bundle: its index and where each entry's bytes are, checked before anything is
//! loaded.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::parts::Parts;
use super::{blob_entry, BundleBlob, BundleFile, BundleIndex, FORMAT_VERSION, INDEX_ENTRY};
use crate::mirror::copy;
use crate::mirror::registry::RawManifest;
use crate::mirror::{sha256_digest, ImageRef, MirrorError};

/// An opened bundle: its index and where each entry's data is.
#[derive(Debug)]
pub struct OpenBundle {
    /// The bundle's name: its file, or its parts' base name.
    pub path: PathBuf,
    /// The files it is stored in.
    pub parts: Parts,
    /// `kprov-bundle.json`.
    pub index: BundleIndex,
    /// Entry name → (data offset, size).
    pub entries: BTreeMap<String, (u64, u64)>,
}

impl OpenBundle {
    pub(crate) fn err(&self, entry: &str, problem: impl Into<String>) -> MirrorError {
        MirrorError::Bundle {
            bundle: self.path.display().to_string(),
            entry: entry.to_string(),
            problem: problem.into(),
        }
    }

    /// Open and check the structure: every entry the index names is there with its size.
    /// `path` is a whole bundle or a split one (its base name, `.SHA256SUMS` or a part); the
    /// parts' list is checked, not their content ([`OpenBundle::open_verified`]).
    pub fn open(path: &Path) -> Result<OpenBundle, MirrorError> {
        let parts = Parts::locate(path)?;
        OpenBundle::open_parts(parts)
    }

    /// [`OpenBundle::open`], after checking every part against `SHA256SUMS`: what an import
    /// does before it loads anything.
    pub fn open_verified(path: &Path) -> Result<OpenBundle, MirrorError> {
        let parts = Parts::locate(path)?;
        parts.verify_checksums()?;
        OpenBundle::open_parts(parts)
    }

    fn open_parts(parts: Parts) -> Result<OpenBundle, MirrorError> {
        let path = parts.name.clone();
        let bad = |entry: &str, problem: String| MirrorError::Bundle {
            bundle: path.display().to_string(),
            entry: entry.to_string(),
            problem,
        };
        let mut ar = tar::Archive::new(parts.reader());
        let mut entries = BTreeMap::new();
        let mut index_bytes = None;
        for e in ar
            .entries()
            .map_err(|e| bad("(tar header)", e.to_string()))?
        {
            let mut e = e.map_err(|e| bad("(tar header)", e.to_string()))?;
            let name = e
                .path()
                .map_err(|err| bad("(tar header)", err.to_string()))?
                .to_string_lossy()
                .into_owned();
            let size = e.size();
            entries.insert(name.clone(), (e.raw_file_position(), size));
            if name == INDEX_ENTRY {
                let mut v = Vec::new();
                e.read_to_end(&mut v)
                    .map_err(|err| bad(INDEX_ENTRY, err.to_string()))?;
                if v.len() as u64 != size {
                    // The bundle ends inside its index: say so rather than "bad tar header".
                    return Err(bad(
                        INDEX_ENTRY,
                        format!("cut short: {} of {size} bytes", v.len()),
                    ));
                }
                index_bytes = Some(v);
            }
        }
        let index_bytes =
            index_bytes.ok_or_else(|| bad(INDEX_ENTRY, "missing: not a kprov bundle".into()))?;
        let index: BundleIndex = serde_json::from_slice(&index_bytes)
            .map_err(|e| bad(INDEX_ENTRY, format!("not valid: {e}")))?;
        if index.version != FORMAT_VERSION {
            return Err(bad(
                INDEX_ENTRY,
                format!(
                    "format version {} is not {FORMAT_VERSION}; use the kprov that wrote it",
                    index.version
                ),
            ));
        }
        let b = OpenBundle {
            path: path.clone(),
            parts,
            index,
            entries,
        };
        for i in &b.index.images {
            for blob in std::iter::once(&i.manifest)
                .chain(&i.children)
                .chain(&i.blobs)
            {
                let entry = blob_entry(&blob.digest);
                match b.entries.get(&entry) {
                    None => {
                        return Err(b.err(&entry, format!("missing (needed by {})", i.upstream)))
                    }
                    Some((_, size)) if *size != blob.size => {
                        return Err(b.err(&entry, format!("{size} bytes, expected {}", blob.size)))
                    }
                    _ => {}
                }
            }
        }
        for f in &b.index.files {
            // Import extracts each file to `STAGING/ENTRY`: an absolute or `..` entry would
            // write outside the staging directory.
            let relative = Path::new(&f.entry)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !relative || f.entry.is_empty() {
                return Err(b.err(
                    &f.entry,
                    format!("file {:?}: not a relative path inside the bundle", f.name),
                ));
            }
            match b.entries.get(&f.entry) {
                None => return Err(b.err(&f.entry, "missing")),
                Some((_, size)) if *size != f.size => {
                    return Err(b.err(&f.entry, format!("{size} bytes, expected {}", f.size)))
                }
                _ => {}
            }
        }
        Ok(b)
    }

    /// Open the bundle and read every manifest, checking its digest: what an import reads
    /// before it contacts the registry (`kprov mirror --from-bundle FILE --dry-run`).
    pub fn check(path: &Path) -> Result<OpenBundle, MirrorError> {
        let b = OpenBundle::open(path)?;
        for i in &b.index.images {
            ImageRef::parse(&i.upstream)
                .map_err(|e| b.err(INDEX_ENTRY, format!("images[].upstream: {e}")))?;
            for m in std::iter::once(&i.manifest).chain(&i.children) {
                b.read_manifest(m)?;
            }
        }
        Ok(b)
    }

    /// Read a small entry (a manifest) and check its digest.
    pub fn read_manifest(&self, blob: &BundleBlob) -> Result<RawManifest, MirrorError> {
        let entry = blob_entry(&blob.digest);
        let (off, size) = self.entries[&entry];
        if size as usize > crate::mirror::registry::MAX_MANIFEST_BYTES {
            return Err(self.err(&entry, "manifest too large"));
        }
        let mut f = self.parts.reader();
        f.seek(SeekFrom::Start(off))
            .map_err(|e| MirrorError::io(self.path.display(), e))?;
        let mut bytes = vec![0u8; size as usize];
        f.read_exact(&mut bytes)
            .map_err(|e| self.err(&entry, e.to_string()))?;
        let digest = sha256_digest(&bytes);
        if digest != blob.digest {
            return Err(self.err(
                &entry,
                format!("content hashes to {digest}, expected {}", blob.digest),
            ));
        }
        Ok(RawManifest {
            media_type: blob
                .media_type
                .clone()
                .or_else(|| copy::media_type_of(&bytes))
                .unwrap_or_default(),
            bytes,
            digest,
        })
    }

    /// Extract a file entry to `dest`, checking its SHA-256.
    pub fn extract_file(&self, f: &BundleFile, dest: &Path) -> Result<(), MirrorError> {
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).map_err(|e| MirrorError::io(p.display(), e))?;
        }
        let mut out =
            std::fs::File::create(dest).map_err(|e| MirrorError::io(dest.display(), e))?;
        let actual = self.hash_entry(&f.entry, Some((&mut out, dest)))?;
        if actual != f.sha256 {
            let _ = std::fs::remove_file(dest);
            return Err(self.err(
                &f.entry,
                format!(
                    "content hashes to sha256:{actual}, expected sha256:{}",
                    f.sha256
                ),
            ));
        }
        Ok(())
    }

    /// SHA-256 (hex) of an entry's data, copied to `out` on the way when given.
    pub fn hash_entry(
        &self,
        entry: &str,
        mut out: Option<(&mut dyn std::io::Write, &Path)>,
    ) -> Result<String, MirrorError> {
        use sha2::{Digest, Sha256};
        let (off, size) = *self
            .entries
            .get(entry)
            .ok_or_else(|| self.err(entry, "missing"))?;
        let mut src = self.parts.reader();
        src.seek(SeekFrom::Start(off))
            .map_err(|e| MirrorError::io(self.path.display(), e))?;
        let mut src = src.take(size);
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut seen = 0;
        loop {
            let n = src
                .read(&mut buf)
                .map_err(|e| self.err(entry, e.to_string()))?;
            if n == 0 {
                break;
            }
            seen += n as u64;
            h.update(&buf[..n]);
            if let Some((w, dest)) = out.as_mut() {
                w.write_all(&buf[..n])
                    .map_err(|e| MirrorError::io(dest.display(), e))?;
            }
        }
        if seen != size {
            return Err(self.err(entry, format!("cut short: {seen} of {size} bytes")));
        }
        Ok(hex::encode(h.finalize()))
    }
}
