//! How every test runs the `kprov` binary: through `tests/peers/audit-run.sh`, which — when
//! `KPROV_AUDIT_DIR` is set, as `tests/run.sh` does — records each run's argv, stdout, stderr
//! and debug log and the secrets it could see, for the suite-wide secret-leak scan
//! (`tests/peers/leakscan.py`). Without `KPROV_AUDIT_DIR` the script just execs kprov.
//! Include with `#[path = "support/audit.rs"] mod audit;` (or the right relative path).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The kprov binary under test.
pub fn kprov_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kprov"))
}

/// A `Command` that runs kprov (audited when `KPROV_AUDIT_DIR` is set); add args as usual. The
/// child's PID is kprov's (the wrapper execs it).
pub fn kprov_command() -> Command {
    if std::env::var_os("KPROV_AUDIT_DIR").is_some_and(|d| !d.is_empty()) {
        let mut c = Command::new("bash");
        c.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/audit-run.sh"
        ))
        .arg(kprov_bin());
        c
    } else {
        Command::new(kprov_bin())
    }
}

/// The same as an `assert_cmd` command.
pub fn kprov_assert_cmd() -> assert_cmd::Command {
    assert_cmd::Command::from_std(kprov_command())
}

/// Where peers that issue secrets (session ids, tokens) record them for the scan, if auditing.
pub fn issued_secrets_file(peer: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("KPROV_AUDIT_DIR").filter(|d| !d.is_empty())?;
    let dir = PathBuf::from(dir).join("issued");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join(format!("{peer}-{}", std::process::id())))
}

/// kprov against the file store at `state`, with nothing from the developer's own cloud or
/// kprov setup in its environment (no `ZSTACK_*`, `AWS_*`, `KPROV_*` that would change it).
pub fn kprov_isolated(state: &std::path::Path) -> assert_cmd::Command {
    assert_cmd::Command::from_std(kprov_isolated_command(state))
}

/// The same as a std `Command` (for tests that spawn and poll it).
pub fn kprov_isolated_command(state: &std::path::Path) -> Command {
    let mut c = kprov_command();
    c.env("KPROV_STATE_STORE", format!("file://{}", state.display()))
        .env("NO_COLOR", "1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for v in [
        "KPROV_CLUSTER_NAME",
        "KPROV_STATE_ENCRYPTION_KEY_FILE",
        "KPROV_STATE_ENCRYPTION_ALLOW_PLAINTEXT",
        "KPROV_ASSET_SHA256SUMS",
        "KPROV_UNSAFE_NO_CONDITIONAL_WRITES",
        "KPROV_LOG",
        "ZSTACK_ENDPOINT",
        "ZSTACK_ACCOUNT",
        "ZSTACK_PASSWORD",
        "ZSTACK_ACCESS_KEY_ID",
        "ZSTACK_ACCESS_KEY_SECRET",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "DOCKER_CONFIG",
        "RUST_LOG",
    ] {
        c.env_remove(v);
    }
    c
}
