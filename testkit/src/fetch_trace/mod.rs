//! What a rendered node would fetch, read statically from its `#cloud-config`: the files it
//! writes, and every command of the scripts it runs (`runcmd`, and what those run) that touches
//! the network, with URLs and paths resolved from the scripts' own assignments
//! (`bootstrap.env` sourced, `: "${X:=…}"` defaults, `local` variables, function arguments
//! followed through every call site). Anything the reader does not understand — an unknown
//! cloud-config key, a fetch tool it has no rule for, a URL it cannot resolve, a command run
//! through a variable it cannot resolve — is reported as a problem, so a new way of
//! downloading cannot slip past `tests/bootstrap/mirror_catalogue.rs`.

use std::collections::{BTreeMap, BTreeSet};

mod fetchers;
mod script;
mod words;

use script::Script;
use words::glob_match;

/// One network action (or a step that decides one), resolved to concrete strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// curl / wget / python urllib of a URL.
    Download(String),
    /// An image pulled by a shell command (`ctr … pull`, `crictl pull`, …).
    ImagePull(String),
    /// `kubeadm init|join --config FILE` (the file as written by cloud-init).
    Kubeadm { sub: String, config: String },
    /// `kubeadm config images pull` (config file, if any).
    KubeadmImagesPull(String),
    /// `kubectl apply -f PATH` (a glob over written files).
    Apply(String),
    /// A package-manager install, in the named function.
    Packages { tool: String, function: String },
    /// A package repository cloud-init configures (`apt` source URL, `yum_repos` baseurl or
    /// gpgkey): the package manager fetches from it.
    PackageRepository(String),
}

/// Everything read from one node's cloud-config.
#[derive(Debug, Default)]
pub struct Trace {
    /// Files cloud-init writes, path → content (decoded).
    pub files: BTreeMap<String, String>,
    /// Network actions.
    pub actions: BTreeSet<Action>,
    /// What the reader could not understand (must be empty for the trace to be complete).
    pub problems: Vec<String>,
    /// Literal `http(s)://` prefixes found in scripts (each must start some download).
    pub literal_urls: BTreeSet<String>,
}

/// Cloud-config keys that make cloud-init fetch nothing.
const QUIET_KEYS: &[&str] = &[
    "hostname",
    "preserve_hostname",
    "manage_etc_hosts",
    "ssh_authorized_keys",
    "ca_certs",
    "write_files",
    "runcmd",
    "final_message",
];

/// Read a node's cloud-config.
pub fn trace(cloud_config: &str) -> Trace {
    let mut t = Trace::default();
    let doc: serde_yaml::Value = serde_yaml::from_str(cloud_config).expect("cloud-config YAML");
    let map = doc.as_mapping().expect("cloud-config is a mapping");
    for (k, _) in map {
        let k = k.as_str().unwrap_or("?");
        if k == "apt" || k == "yum_repos" {
            package_repositories(k, &doc[k], &mut t);
        } else if !QUIET_KEYS.contains(&k) {
            t.problems.push(format!(
                "cloud-config key `{k}`: may make cloud-init fetch something; teach fetch_trace.rs what"
            ));
        }
    }
    for f in doc["write_files"].as_sequence().into_iter().flatten() {
        let path = f["path"].as_str().expect("write_files path").to_string();
        if f.get("source").is_some() {
            t.problems
                .push(format!("write_files {path}: `source` downloads the file"));
        }
        let raw = f["content"].as_str().unwrap_or_default();
        let content = match f["encoding"].as_str() {
            None => raw.to_string(),
            Some("gz+b64") | Some("gzip+base64") => {
                use base64::Engine;
                use std::io::Read;
                let gz = base64::engine::general_purpose::STANDARD
                    .decode(raw.trim())
                    .expect("base64");
                let mut s = String::new();
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_string(&mut s)
                    .expect("gzip");
                s
            }
            Some(e) => {
                t.problems.push(format!("write_files {path}: encoding {e}"));
                String::new()
            }
        };
        t.files.insert(path, content);
    }
    for cmd in doc["runcmd"].as_sequence().into_iter().flatten() {
        let line = match cmd {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Sequence(words) => words
                .iter()
                .map(|w| {
                    format!(
                        "'{}'",
                        w.as_str().unwrap_or_default().replace('\'', "'\\''")
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
            other => panic!("runcmd entry {other:?}"),
        };
        let files = t.files.clone();
        Script::analyse(&line, &files, &mut t);
    }
    t
}

/// Does `token` look like an image reference (`host[:port]/path:tag` or `@sha256:`)?
pub fn looks_like_image(token: &str) -> bool {
    if token.contains("://") || token.starts_with('/') || token.contains(char::is_whitespace) {
        return false;
    }
    let Some((host, rest)) = token.split_once('/') else {
        return false;
    };
    let last = rest.rsplit('/').next().unwrap_or(rest);
    (host.contains('.') || host.contains(':'))
        && (last.contains("@sha256:")
            || last
                .split_once(':')
                .is_some_and(|(n, t)| !n.is_empty() && !t.is_empty()))
}

/// Image-like tokens in a text (split on whitespace, quotes, `=` and `,`).
pub fn image_like_tokens(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || "\"'=,[]{}()".contains(c))
        .filter(|w| looks_like_image(w))
        .map(str::to_string)
        .collect()
}

/// `glob` (only `*` in the last segment) over written file paths.
pub fn glob_files<'a>(files: &'a BTreeMap<String, String>, glob: &str) -> Vec<&'a str> {
    files
        .keys()
        .filter(|p| glob_match(p, glob))
        .filter(|p| {
            let (gd, _) = glob.rsplit_once('/').unwrap_or(("", glob));
            let (pd, _) = p.rsplit_once('/').unwrap_or(("", p));
            gd == pd
        })
        .map(String::as_str)
        .collect()
}

/// Every `image:` value in a multi-document YAML text, and image-like strings elsewhere.
pub fn manifest_images(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    use serde::Deserialize;
    let mut images = BTreeSet::new();
    let mut elsewhere = BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(doc).expect("manifest YAML");
        let mut stack = vec![(None::<String>, v)];
        while let Some((key, v)) = stack.pop() {
            match v {
                serde_yaml::Value::Mapping(m) => {
                    for (k, v) in m {
                        stack.push((k.as_str().map(str::to_string), v));
                    }
                }
                serde_yaml::Value::Sequence(s) => {
                    stack.extend(s.into_iter().map(|v| (key.clone(), v)));
                }
                serde_yaml::Value::String(s) if key.as_deref() == Some("image") => {
                    images.insert(s);
                }
                serde_yaml::Value::String(s) => elsewhere.extend(image_like_tokens(&s)),
                serde_yaml::Value::Tagged(t) => stack.push((key, t.value)),
                _ => {}
            }
        }
    }
    (images, elsewhere)
}

/// The repositories of cloud-init's `apt` (only `sources` entries with a `deb` line,
/// `preserve_sources_list`, and a `sources_list` of comments) and `yum_repos` (only `baseurl` and `gpgkey`); any other key may
/// fetch from elsewhere and is a problem.
fn package_repositories(key: &str, v: &serde_yaml::Value, t: &mut Trace) {
    let map = v.as_mapping().cloned().unwrap_or_default();
    for (k, entry) in &map {
        let k = k.as_str().unwrap_or("?");
        match (key, k) {
            ("apt", "preserve_sources_list") => {}
            // the replacement sources.list: comments only, or its sources would be fetched
            ("apt", "sources_list") => {
                let text = entry.as_str().unwrap_or_default();
                if let Some(l) = text
                    .lines()
                    .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                {
                    t.problems
                        .push(format!("apt sources_list has a source line: {l:?}"));
                }
            }
            ("apt", "sources") => {
                for (name, src) in entry.as_mapping().cloned().unwrap_or_default() {
                    let line = src["source"].as_str().unwrap_or_default();
                    let url = line
                        .split_whitespace()
                        .find(|w| w.starts_with("http://") || w.starts_with("https://"));
                    match url {
                        Some(u) if line.starts_with("deb ") => {
                            t.actions.insert(Action::PackageRepository(u.to_string()));
                        }
                        _ => t.problems.push(format!(
                            "apt source {name:?}: {line:?} is not a `deb` line with an http(s) URL"
                        )),
                    }
                    for (sk, _) in src.as_mapping().cloned().unwrap_or_default() {
                        let sk = sk.as_str().unwrap_or("?");
                        if !matches!(sk, "source" | "key") {
                            t.problems.push(format!("apt source {name:?}: key `{sk}`"));
                        }
                    }
                }
            }
            ("yum_repos", repo) => {
                for (rk, rv) in entry.as_mapping().cloned().unwrap_or_default() {
                    match rk.as_str().unwrap_or("?") {
                        "baseurl" | "gpgkey" => t.actions.insert(Action::PackageRepository(
                            rv.as_str().unwrap_or_default().to_string(),
                        )),
                        "name" | "enabled" | "gpgcheck" => true,
                        other => {
                            t.problems.push(format!("yum repo {repo}: key `{other}`"));
                            true
                        }
                    };
                }
            }
            (_, other) => t
                .problems
                .push(format!("{key}: key `{other}` may fetch something")),
        }
    }
}
