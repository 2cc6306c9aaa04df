//! How every test runs the `kprov` binary: through `tests/peers/audit-run.sh`, which — when
//! `KPROV_AUDIT_DIR` is set, as `tests/run.sh` does — records each run's argv, stdout, stderr
//! and debug log and the secrets it could see, for the suite-wide secret-leak scan
//! (`tests/peers/leakscan.py`). Without `KPROV_AUDIT_DIR` the script is skipped and kprov runs
//! directly. The wrapper execs kprov, so the child's PID is kprov's (kill -9 tests work the same).
//!
//! The binary under test is passed in: `env!("CARGO_BIN_EXE_kprov")` exists only in the kprov
//! crate's own tests and benchmarks, e.g.
//! `const KPROV: KprovBin = KprovBin::new(env!("CARGO_BIN_EXE_kprov"));`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::peers::repo_root;

/// Is the suite auditing every kprov run (`KPROV_AUDIT_DIR` set and not empty)?
pub fn auditing() -> bool {
    std::env::var_os("KPROV_AUDIT_DIR").is_some_and(|d| !d.is_empty())
}

/// Where a peer that issues secrets (session ids, tokens) records them for the secret-leak
/// scan, when auditing: a new file `$KPROV_AUDIT_DIR/issued/PEER-PID-N` per call.
pub fn issued_secrets_file(peer: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("KPROV_AUDIT_DIR").filter(|d| !d.is_empty())?;
    let dir = PathBuf::from(dir).join("issued");
    std::fs::create_dir_all(&dir).ok()?;
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(dir.join(format!("{peer}-{}-{n}", std::process::id())))
}

/// Run a command, returning (success, stdout, stderr).
pub fn run(mut c: Command) -> (bool, String, String) {
    let out = c.output().expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Environment variables of the developer's own cloud or kprov setup that would change what
/// kprov does; [`KprovBin::isolated_command`] removes them.
pub const HOST_ENV: &[&str] = &[
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
];

/// The kprov binary under test.
#[derive(Debug, Clone, Copy)]
pub struct KprovBin(&'static str);

impl KprovBin {
    /// The binary at `path` (`env!("CARGO_BIN_EXE_kprov")`).
    pub const fn new(path: &'static str) -> KprovBin {
        KprovBin(path)
    }

    /// Its path.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(self.0)
    }

    /// A `Command` that runs kprov (audited when `KPROV_AUDIT_DIR` is set); add args as usual.
    pub fn command(&self) -> Command {
        if auditing() {
            let mut c = Command::new("bash");
            c.arg(repo_root().join("tests/peers/audit-run.sh"))
                .arg(self.0);
            c
        } else {
            Command::new(self.0)
        }
    }

    /// The same as an `assert_cmd` command.
    pub fn assert_cmd(&self) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.command())
    }

    /// kprov against the file store at `state`, with nothing from the developer's own cloud or
    /// kprov setup in its environment ([`HOST_ENV`]).
    pub fn isolated(&self, state: &Path) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.isolated_command(state))
    }

    /// The same as a std `Command` (for tests that spawn and poll it).
    pub fn isolated_command(&self, state: &Path) -> Command {
        let mut c = self.command();
        c.env("KPROV_STATE_STORE", format!("file://{}", state.display()))
            .env("NO_COLOR", "1")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for v in HOST_ENV {
            c.env_remove(v);
        }
        c
    }
}

/// A `kprov` CLI driver with its own `file://` state store.
pub struct Kprov {
    /// The binary.
    pub bin: KprovBin,
    /// State store directory.
    pub state: tempfile::TempDir,
    /// Extra environment for every run.
    pub env: Vec<(String, String)>,
}

impl Kprov {
    /// New store.
    pub fn new(bin: KprovBin) -> Kprov {
        Kprov {
            bin,
            state: tempfile::tempdir().unwrap(),
            env: vec![],
        }
    }

    /// The command.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.bin.command();
        c.args(args)
            .env(
                "KPROV_STATE_STORE",
                format!("file://{}", self.state.path().display()),
            )
            .env("NO_COLOR", "1")
            .env_remove("KPROV_CLUSTER_NAME")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Run, returning the output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Run and require success; returns stdout+stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "kprov {args:?} failed:\n{text}");
        text
    }
}
