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
