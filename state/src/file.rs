//! `file://` backend: one file per key under a root directory.
//!
//! Writes go to a temporary file that is fsynced and renamed over the target, so a reader sees
//! the old or the new object, never a torn one. Conditional writes take an exclusive `flock` on
//! `ROOT/.kprov-lock` around check-and-rename, which makes them atomic between processes on the
//! same machine (the `file://` store is a single-machine store; share clusters through `s3://`).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::{
    is_secret_key, validate_key, Condition, Object, StateError, StateResult, StateStore, Version,
};

/// A state store in a local directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

fn io(location: &Path, cause: std::io::Error) -> StateError {
    StateError::Io {
        location: location.display().to_string(),
        cause,
    }
}

fn version_of(bytes: &[u8]) -> Version {
    Version(hex::encode(Sha256::digest(bytes)))
}

impl FileStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileStore { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> StateResult<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn ensure_dirs(&self, key: &str) -> StateResult<()> {
        let secret = is_secret_key(key);
        let mut dir = self.root.clone();
        let mut builder = fs::DirBuilder::new();
        builder.mode(0o755);
        builder.recursive(true);
        builder.create(&dir).map_err(|e| io(&dir, e))?;
        let segs: Vec<&str> = key.split('/').collect();
        let mut in_secret = false;
        for seg in &segs[..segs.len() - 1] {
            dir.push(seg);
            in_secret |= secret && (*seg == "pki" || *seg == "secrets");
            let mode = if in_secret { 0o700 } else { 0o755 };
            match fs::DirBuilder::new().mode(mode).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if in_secret {
                        let meta = fs::metadata(&dir).map_err(|e| io(&dir, e))?;
                        if meta.permissions().mode() & 0o077 != 0 {
                            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                                .map_err(|e| io(&dir, e))?;
                        }
                    }
                }
                Err(e) => return Err(io(&dir, e)),
            }
        }
        Ok(())
    }

    fn lock_root(&self) -> StateResult<File> {
        fs::DirBuilder::new()
            .recursive(true)
            .create(&self.root)
            .map_err(|e| io(&self.root, e))?;
        let p = self.root.join(".kprov-lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| io(&p, e))?;
        f.lock().map_err(|e| io(&p, e))?;
        Ok(f)
    }

    fn read(&self, path: &Path) -> StateResult<Option<Object>> {
        match fs::read(path) {
            Ok(bytes) => {
                let version = version_of(&bytes);
                Ok(Some(Object { bytes, version }))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == ErrorKind::IsADirectory => Ok(None),
            Err(e) => Err(io(path, e)),
        }
    }

    fn check(&self, key: &str, path: &Path, cond: &Condition) -> StateResult<()> {
        match cond {
            Condition::None => Ok(()),
            Condition::IfAbsent => match self.read(path)? {
                None => Ok(()),
                Some(_) => Err(StateError::Conflict { key: key.into() }),
            },
            Condition::IfVersion(v) => match self.read(path)? {
                Some(o) if &o.version == v => Ok(()),
                _ => Err(StateError::Conflict { key: key.into() }),
            },
        }
    }

    fn write_atomic(&self, key: &str, path: &Path, bytes: &[u8]) -> StateResult<()> {
        self.ensure_dirs(key)?;
        let dir = path.parent().expect("key has a parent under root");
        let tmp = dir.join(format!(
            ".kprov-tmp-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mode = if is_secret_key(key) { 0o600 } else { 0o644 };
        let result = (|| {
            let mut f = OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(mode)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)?;
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io(path, e));
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for FileStore {
    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn get(&self, key: &str) -> StateResult<Option<Object>> {
        let p = self.path(key)?;
        self.read(&p)
    }

    async fn put(&self, key: &str, bytes: &[u8], cond: Condition) -> StateResult<Version> {
        let p = self.path(key)?;
        let _guard = match cond {
            Condition::None => None,
            _ => Some(self.lock_root()?),
        };
        self.check(key, &p, &cond)?;
        self.write_atomic(key, &p, bytes)?;
        Ok(version_of(bytes))
    }

    async fn list(&self, prefix: &str) -> StateResult<Vec<String>> {
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out).map_err(|e| io(&self.root, e))?;
        out.retain(|k| k.starts_with(prefix));
        out.sort();
        Ok(out)
    }

    async fn delete(&self, key: &str, cond: Condition) -> StateResult<()> {
        let p = self.path(key)?;
        let _guard = match cond {
            Condition::None => None,
            _ => Some(self.lock_root()?),
        };
        if cond == Condition::IfAbsent {
            return Err(StateError::InvalidKey {
                key: key.into(),
                why: "delete cannot be conditioned on absence".into(),
            });
        }
        self.check(key, &p, &cond)?;
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(&p, e)),
        }
        // Remove now-empty parent directories up to the root, so a deleted cluster leaves nothing.
        let mut dir = p.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(".kprov-") {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_store_passes_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("store"));
        crate::suite::run_all(&store).await;
    }

    #[tokio::test]
    async fn secrets_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        store
            .put("c/pki/ca.key", b"k", Condition::None)
            .await
            .unwrap();
        store
            .put("c/config.yaml", b"x", Condition::None)
            .await
            .unwrap();
        let mode = |p: &str| {
            fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("c/pki/ca.key"), 0o600);
        assert_eq!(mode("c/pki"), 0o700);
        assert_eq!(mode("c/config.yaml"), 0o644);
    }
}
