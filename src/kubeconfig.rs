//! Kubeconfig files: adding one cluster's entries (cluster, user, context) to an existing file
//! without touching anybody else's, under a lock file, written atomically with mode 0600.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::error::ExitError;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};
use serde_yaml::{Mapping, Value};

/// `$KUBECONFIG`'s first entry, else `~/.kube/config`.
pub fn default_path() -> anyhow::Result<PathBuf> {
    if let Some(v) = std::env::var_os("KUBECONFIG") {
        if let Some(first) = std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()) {
            return Ok(first);
        }
    }
    let base = directories::BaseDirs::new()
        .context("cannot find your home directory; pass --kubeconfig PATH")?;
    Ok(base.home_dir().join(".kube").join("config"))
}

/// What `export kubeconfig` adds: cluster `name`, user `name-admin`, context `name`.
pub struct Entries {
    /// The cluster's name: the names of the cluster and the context, and the user's prefix.
    pub name: String,
    /// `https://HOST:PORT` of the API server.
    pub server: String,
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
    /// The client certificate (PEM).
    pub cert_pem: String,
    /// The client key (PEM); written only into the 0600 file.
    pub key_pem: String,
}

/// A kubeconfig file (`kind: Config`). Fields kprov does not know are kept in `extra`.
#[derive(Debug, Serialize, Deserialize)]
struct Kubeconfig {
    #[serde(rename = "apiVersion", default = "api_v1")]
    api_version: String,
    #[serde(default = "kind_config")]
    kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    clusters: Vec<Named>,
    #[serde(default, deserialize_with = "null_as_default")]
    contexts: Vec<Named>,
    #[serde(
        rename = "current-context",
        default,
        deserialize_with = "null_as_default"
    )]
    current_context: String,
    #[serde(default, deserialize_with = "null_as_default")]
    users: Vec<Named>,
    #[serde(flatten)]
    extra: Mapping,
}

/// An entry of `clusters`, `users` or `contexts`: its name and everything else, kept as is.
#[derive(Debug, Serialize, Deserialize)]
struct Named {
    name: String,
    #[serde(flatten)]
    rest: Mapping,
}

fn api_v1() -> String {
    "v1".into()
}

fn kind_config() -> String {
    "Config".into()
}

/// kubectl writes `clusters: null` for an empty list (and may leave other fields null).
fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl Default for Kubeconfig {
    fn default() -> Self {
        Kubeconfig {
            api_version: api_v1(),
            kind: kind_config(),
            clusters: Vec::new(),
            contexts: Vec::new(),
            current_context: String::new(),
            users: Vec::new(),
            extra: Mapping::new(),
        }
    }
}

fn map(pairs: Vec<(&str, Value)>) -> Mapping {
    pairs
        .into_iter()
        .map(|(k, v)| (Value::from(k), v))
        .collect()
}

/// Set `list[name].field` to `new`, keeping the keys of the old `field` mapping named in `keep`
/// and the entry's other fields; append the entry if there is none of that name.
fn upsert(list: &mut Vec<Named>, name: &str, field: &str, mut new: Mapping, keep: &[&str]) {
    match list.iter_mut().find(|e| e.name == name) {
        Some(entry) => {
            if let Some(Value::Mapping(old)) = entry.rest.get(field) {
                for k in keep {
                    if let Some(v) = old.get(*k) {
                        new.entry(Value::from(*k)).or_insert_with(|| v.clone());
                    }
                }
            }
            entry.rest.insert(Value::from(field), Value::Mapping(new));
        }
        None => list.push(Named {
            name: name.to_string(),
            rest: map(vec![(field, Value::Mapping(new))]),
        }),
    }
}

impl Kubeconfig {
    /// Add or replace our cluster, user and context, and make the context current.
    fn merge(&mut self, e: &Entries) {
        let b64 = |s: &str| Value::from(base64::engine::general_purpose::STANDARD.encode(s));
        let user = format!("{}-admin", e.name);
        upsert(
            &mut self.clusters,
            &e.name,
            "cluster",
            map(vec![
                ("server", Value::from(e.server.as_str())),
                ("certificate-authority-data", b64(&e.ca_pem)),
            ]),
            &["proxy-url", "extensions"],
        );
        upsert(
            &mut self.users,
            &user,
            "user",
            map(vec![
                ("client-certificate-data", b64(&e.cert_pem)),
                ("client-key-data", b64(&e.key_pem)),
            ]),
            &[],
        );
        upsert(
            &mut self.contexts,
            &e.name,
            "context",
            map(vec![
                ("cluster", Value::from(e.name.as_str())),
                ("user", Value::from(user.as_str())),
            ]),
            &["namespace", "extensions"],
        );
        self.current_context = e.name.clone();
    }
}

/// Removes the kubeconfig lock file (the `PATH.lock` convention of kubectl/client-go) on drop.
struct LockFile(PathBuf);

impl LockFile {
    fn acquire(path: &Path) -> anyhow::Result<LockFile> {
        let mut lock = path.as_os_str().to_owned();
        lock.push(".lock");
        let lock = PathBuf::from(lock);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock)
            {
                Ok(_) => return Ok(LockFile(lock)),
                Err(e)
                    if e.kind() == std::io::ErrorKind::AlreadyExists
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    anyhow::bail!(
                        "{} exists: another program is writing the kubeconfig; if none is, remove the stale lock file",
                        lock.display()
                    )
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("creating lock file {}", lock.display())))
                }
            }
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Merge `e` into the kubeconfig at `path` (created if missing) and write it back atomically
/// with mode 0600. A symlink is followed, so the file it points to is updated. Returns the path
/// written.
pub fn write(path: &Path, e: &Entries) -> anyhow::Result<PathBuf> {
    let path = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)
            .with_context(|| format!("{}: dangling symlink", path.display()))?,
        _ => path.to_path_buf(),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let _lock = LockFile::acquire(&path)?;
    let mut config = match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().is_empty() => Kubeconfig::default(),
        Ok(text) => serde_yaml::from_str::<Kubeconfig>(&text).map_err(|err| {
            // Only the position: serde_yaml's message can quote values, and this file holds
            // credentials.
            let at = err.location().map(|l| format!(" at line {}, column {}", l.line(), l.column())).unwrap_or_default();
            ExitError::usage(format!(
                "{} is not a kubeconfig kprov can merge into (expected a `kind: Config` mapping with lists of \
                 named clusters, users and contexts; problem{at}); fix it or pass --kubeconfig OTHER_FILE",
                path.display()
            ))
        })?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Kubeconfig::default(),
        Err(err) => return Err(anyhow::Error::new(err).context(format!("reading {}", path.display()))),
    };
    config.merge(e);
    let text = serde_yaml::to_string(&config).context("serialising the kubeconfig")?;
    write_atomic(&path, &dir, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Write to a temporary file (0600) in the same directory, fsync, rename over `path`.
fn write_atomic(path: &Path, dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(
        ".{file_name}.kprov-{}-{:x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Entries {
        Entries {
            name: "demo".into(),
            server: "https://10.0.0.1:6443".into(),
            ca_pem: "CA".into(),
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
        }
    }

    #[test]
    fn merge_keeps_others_and_replaces_ours() {
        let text = r#"
apiVersion: v1
kind: Config
preferences: {colors: true}
clusters:
- name: other
  cluster: {server: "https://other:6443", insecure-skip-tls-verify: true}
- name: demo
  cluster: {server: "https://old:6443", certificate-authority: /old/ca.crt, proxy-url: "http://proxy:3128"}
users:
- name: other-user
  user: {token: abc, exec: {command: foo}}
- name: demo-admin
  user: {token: stale}
contexts:
- name: other
  context: {cluster: other, user: other-user, namespace: kube-system}
- name: demo
  context: {cluster: old, user: old, namespace: apps}
current-context: other
x-custom: keep
"#;
        let mut k: Kubeconfig = serde_yaml::from_str(text).unwrap();
        k.merge(&entries());
        let out: Value = serde_yaml::from_str(&serde_yaml::to_string(&k).unwrap()).unwrap();
        assert_eq!(out["current-context"], "demo");
        assert_eq!(out["x-custom"], "keep");
        assert_eq!(out["preferences"]["colors"], true);
        assert_eq!(
            out["clusters"][0]["cluster"]["insecure-skip-tls-verify"],
            true
        );
        assert_eq!(out["users"][0]["user"]["exec"]["command"], "foo");
        assert_eq!(out["contexts"][0]["context"]["namespace"], "kube-system");
        let demo = &out["clusters"][1]["cluster"];
        assert_eq!(demo["server"], "https://10.0.0.1:6443");
        assert_eq!(demo["proxy-url"], "http://proxy:3128");
        assert!(demo.get("certificate-authority").is_none());
        assert_eq!(out["users"][1]["user"].as_mapping().unwrap().len(), 2);
        assert!(out["users"][1]["user"].get("token").is_none());
        assert_eq!(out["contexts"][1]["context"]["cluster"], "demo");
        assert_eq!(out["contexts"][1]["context"]["user"], "demo-admin");
        assert_eq!(out["contexts"][1]["context"]["namespace"], "apps");
        assert_eq!(out["clusters"].as_sequence().unwrap().len(), 2);
    }

    #[test]
    fn merge_into_empty_and_null_lists() {
        let mut k: Kubeconfig = serde_yaml::from_str(
            "apiVersion: v1\nkind: Config\nclusters: null\nusers: null\ncontexts: null\ncurrent-context: null\npreferences: {}\n",
        )
        .unwrap();
        k.merge(&entries());
        assert_eq!(k.clusters.len(), 1);
        assert_eq!(k.users[0].name, "demo-admin");
        let mut d = Kubeconfig::default();
        d.merge(&entries());
        assert_eq!(d.current_context, "demo");
    }
}
