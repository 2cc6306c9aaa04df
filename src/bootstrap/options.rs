//! Renderer settings that are not part of the cluster spec (test and debugging hooks from the
//! environment), including SHA-256 sums that replace the versions table's pinned ones.

/// The name a file is known by in `KPROV_ASSET_SHA256SUMS`: the last segment of its URL.
pub fn file_name_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// Read a `sha256sum`-format file (`HEX  NAME` or `HEX *NAME` per line) into name → sum.
/// An unreadable file or a malformed line is reported and skipped: the pinned sums then apply,
/// which fails the download loudly on the node rather than trusting anything.
fn read_sha256sums(path: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let mut parts = line.split_whitespace();
                match (parts.next(), parts.next()) {
                    (Some(sum), Some(name))
                        if sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()) =>
                    {
                        let name = name.trim_start_matches('*');
                        let name = name.rsplit('/').next().unwrap_or(name);
                        out.insert(name.to_string(), sum.to_ascii_lowercase());
                    }
                    _ => tracing::warn!("KPROV_ASSET_SHA256SUMS {path}: ignoring line {line:?}"),
                }
            }
            if !out.is_empty() {
                tracing::warn!(
                    "KPROV_ASSET_SHA256SUMS {path}: replacing the pinned SHA-256 of {} file(s): {}",
                    out.len(),
                    out.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        Err(e) => tracing::warn!("KPROV_ASSET_SHA256SUMS {path}: cannot read: {e}"),
    }
    out
}

/// Settings of the renderer that are not part of the cluster spec: hooks for tests and for
/// debugging boots (read from the environment by [`BootstrapOptions::from_env`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// Every phase result is POSTed as JSON to `{callback_url}/kprov/phase` (env
    /// `KPROV_CALLBACK_URL`).
    pub callback_url: Option<String>,
    /// Where binaries are installed on the node.
    pub bin_dir: String,
    /// The kubeadm the script runs (env `KPROV_KUBEADM_PATH`; default `{bin_dir}/kubeadm`), e.g. a
    /// stand-in that records its arguments.
    pub kubeadm_path: Option<String>,
    /// Download the Kubernetes binaries (env `KPROV_INSTALL_BINARIES=0` turns it off for images
    /// that have them baked in; the script then only checks they exist).
    pub install_binaries: bool,
    /// How long a node keeps retrying `kubeadm join`, in seconds.
    pub join_timeout_secs: u64,
    /// SHA-256 sums that replace the pinned ones of the versions table, by file name (env
    /// `KPROV_ASSET_SHA256SUMS=FILE` in `sha256sum` format): for in-house builds of the binaries
    /// and for the VM tests' stand-in kubeadm. kprov warns whenever it is in effect.
    pub sha256_overrides: std::collections::BTreeMap<String, String>,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions {
            callback_url: None,
            bin_dir: "/usr/local/bin".into(),
            kubeadm_path: None,
            install_binaries: true,
            join_timeout_secs: 3600,
            sha256_overrides: Default::default(),
        }
    }
}

impl BootstrapOptions {
    /// Defaults, overridden by `KPROV_CALLBACK_URL`, `KPROV_KUBEADM_PATH` and
    /// `KPROV_INSTALL_BINARIES` (`0`/`false` to skip downloads).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        BootstrapOptions {
            callback_url: var("KPROV_CALLBACK_URL"),
            kubeadm_path: var("KPROV_KUBEADM_PATH"),
            install_binaries: !matches!(
                var("KPROV_INSTALL_BINARIES").as_deref(),
                Some("0" | "false" | "no")
            ),
            sha256_overrides: var("KPROV_ASSET_SHA256SUMS")
                .map(|f| read_sha256sums(&f))
                .unwrap_or_default(),
            ..BootstrapOptions::default()
        }
    }

    pub(super) fn kubeadm(&self) -> String {
        self.kubeadm_path
            .clone()
            .unwrap_or_else(|| format!("{}/kubeadm", self.bin_dir))
    }
}
