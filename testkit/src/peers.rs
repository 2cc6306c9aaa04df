//! Finding the test peers `tests/peers/install.sh` installs (programs on PATH, the peers venv,
//! the repository's peer scripts), with the suite's one policy for a missing peer: the test
//! fails with a message naming `bash tests/peers/install.sh`, unless `KPROV_SKIP_PEERS=1`, in
//! which case it prints a loud SKIPPED line and returns.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository root (the workspace this crate is a member of).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ sits in the repository root")
        .to_path_buf()
}

/// The venv and peers prefix (`KPROV_PEERS`, default `/opt/kprov-peers`).
pub fn prefix() -> PathBuf {
    std::env::var_os("KPROV_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/kprov-peers"))
}

/// `name` on PATH, or `name` itself when it is a path (contains `/`) to an existing file.
pub fn on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Is `KPROV_SKIP_PEERS=1` set?
pub fn skipping() -> bool {
    std::env::var("KPROV_SKIP_PEERS").is_ok_and(|v| v == "1")
}

/// The missing-peer policy: `None` after a loud SKIPPED line when `KPROV_SKIP_PEERS=1`,
/// otherwise a panic naming `test` and `msg` (which names the install step).
pub fn missing<T>(test: &str, msg: &str) -> Option<T> {
    if skipping() {
        eprintln!("\n!!!!! SKIPPED {test}: {msg} (KPROV_SKIP_PEERS=1) !!!!!\n");
        None
    } else {
        panic!("{test}: {msg} (or set KPROV_SKIP_PEERS=1 to skip peer tests)");
    }
}

/// Path of a peer program (a name on PATH, or an absolute path). `None` (after a loud SKIPPED
/// line) only when `KPROV_SKIP_PEERS=1`; otherwise a missing peer panics.
pub fn require(test: &str, program: &str) -> Option<PathBuf> {
    if let Some(p) = on_path(program) {
        return Some(p);
    }
    missing(
        test,
        &format!("test peer `{program}` is missing; install the test peers with `bash tests/peers/install.sh`"),
    )
}

/// The venv's `kubernetes-validate`.
pub fn kubernetes_validate(test: &str) -> Option<PathBuf> {
    require(
        test,
        prefix()
            .join("venv/bin/kubernetes-validate")
            .to_str()
            .expect("utf-8 path"),
    )
}

/// The venv's python (has `jsonschema` and `yaml` through kubernetes-validate's dependencies).
pub fn venv_python(test: &str) -> Option<PathBuf> {
    require(
        test,
        prefix()
            .join("venv/bin/python")
            .to_str()
            .expect("utf-8 path"),
    )
}

/// `program` in the peers venv (`$KPROV_PEERS/venv/bin`, else `/opt/kprov-peers/venv/bin`), if
/// it is there.
pub fn venv_bin(program: &str) -> Option<PathBuf> {
    let p = prefix().join("venv/bin").join(program);
    p.is_file().then_some(p)
}

/// The peers venv's python3 with `cryptography` importable (the token server signs with it).
pub fn require_python(test: &str) -> Option<PathBuf> {
    let ok = venv_bin("python3").filter(|py| {
        Command::new(py)
            .args(["-c", "import cryptography"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if ok.is_some() {
        return ok;
    }
    missing(
        test,
        "the peers venv python3 with `cryptography` (/opt/kprov-peers/venv, or $KPROV_PEERS/venv) is missing; install the test peers with `bash tests/peers/install.sh`",
    )
}

/// `tests/peers/NAME` of this repository (a peer script: fault proxy, token server, …).
pub fn peer_script(name: &str) -> PathBuf {
    let p = repo_root().join("tests/peers").join(name);
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// Is this process running as root (effective uid 0)?
pub fn euid_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
