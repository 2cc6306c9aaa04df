//! The command line: one module per verb. This is the edge where errors become messages and
//! exit codes (0 ok, 1 failure, 2 usage or validation error, 3 cluster locked).

use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kprov_state::StateStore;

pub mod assets;
pub mod backup;
pub mod completion;
pub mod create;
pub mod delete;
pub mod edit;
pub mod export;
pub mod get;
pub mod mirror;
pub mod output;
pub mod restore;
pub mod rolling_update;
pub mod state;
pub mod update;
pub mod userdata;
pub mod validate;

pub use crate::error::{exit_code, ExitError, EXIT_LOCKED, EXIT_USAGE};

/// kprov provisions Kubernetes clusters on ZStack, AWS and libvirt, kops-style: the spec lives in
/// a state store, `update` shows a plan and applies it with --yes, `delete` removes everything
/// the cluster owns.
#[derive(Debug, Parser)]
#[command(
    name = "kprov",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage or validation error, 3 cluster locked by another run.\n\
Environment: KPROV_STATE_STORE (state URL), KPROV_CLUSTER_NAME (current cluster)."
)]
pub struct Cli {
    /// State store URL: file:///PATH or s3://BUCKET[/PREFIX]. Default: a file store in your data directory.
    #[arg(
        long,
        global = true,
        env = "KPROV_STATE_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub state: Option<String>,
    /// The cluster to act on when a command takes no NAME.
    #[arg(
        long,
        global = true,
        env = "KPROV_CLUSTER_NAME",
        value_name = "CLUSTER",
        hide_env_values = true
    )]
    pub name: Option<String>,
    /// Use an S3-compatible store that ignores conditional writes (no safe locking!).
    #[arg(long, global = true)]
    pub unsafe_no_conditional_writes: bool,
    /// No colours (also off with NO_COLOR, CLICOLOR=0, or no terminal).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// More logs: -v debug, -vv trace.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// How this run draws on the terminal (colours, progress bars).
    pub fn terminal(&self) -> output::Terminal {
        output::Terminal::detect(self.no_color)
    }
}

/// The verbs of `kprov`, kops-style.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a cluster or instance group in the state store (nothing is created in the cloud
    /// until `kprov update cluster --yes`).
    Create(Box<create::CreateArgs>),
    /// Show clusters, instance groups and instances.
    Get(get::GetArgs),
    /// Show what must change to make the cloud match the spec; apply it with --yes.
    Update(update::UpdateArgs),
    /// Edit a cluster's or instance group's stored spec in $EDITOR (validated on save).
    Edit(edit::EditArgs),
    /// Replace the instances whose spec changed, group by group (plan; --yes replaces).
    RollingUpdate(rolling_update::RollingUpdateArgs),
    /// Check that a cluster works: every instance a Ready Node, system pods Ready (exit 1 if not).
    Validate(validate::ValidateArgs),
    /// Delete a cluster: every cloud resource it owns, then its state.
    Delete(delete::DeleteArgs),
    /// Export a kubeconfig for a cluster, with a short-lived admin client certificate.
    Export(export::ExportArgs),
    /// Back up a cluster's etcd into the state store (`backup etcd NAME`).
    Backup(backup::BackupArgs),
    /// Bring back a cluster whose control planes are all lost (`restore etcd NAME --backup ID`).
    Restore(restore::RestoreArgs),
    /// Operate on state stores (copy clusters between them).
    State(state::StateArgs),
    /// Copy a cluster's images and files to its mirrors, or into / out of an offline bundle.
    Mirror(Box<mirror::MirrorArgs>),
    /// Check a cluster before create (`check assets NAME`: every asset is at its mirror).
    Check(assets::CheckArgs),
    /// Print the version.
    Version,
    /// Print a shell completion script.
    Completion(completion::CompletionArgs),
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Aligned columns.
    #[default]
    Table,
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// How a mutating run applies changes, shared by `update` and `rolling-update`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// Cloud calls in flight at once (default: the provider's).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Give up applying after this long (e.g. 30m, 2h).
    #[arg(long, default_value = "1h")]
    pub timeout: String,
    /// Lock lease time-to-live in seconds (renewed every third of it while running).
    #[arg(long, default_value_t = 60, hide = true)]
    pub lock_ttl: u64,
    /// Do not check that every mirrored image and file is in place before creating VMs (for
    /// mirrors only the nodes can reach). Without it, a missing asset stops the run (exit 2).
    #[arg(long, env = "KPROV_SKIP_ASSET_CHECK", value_parser = clap::builder::BoolishValueParser::new())]
    pub skip_asset_check: bool,
    /// Lock options.
    #[command(flatten)]
    pub lock: LockArgs,
    /// How instances leave a running cluster, and how its API server is reached (a new
    /// bootstrap token, draining, validation).
    #[command(flatten)]
    pub drain: DrainArgs,
}

impl ApplyArgs {
    /// The engine's options for a run recorded in the journal as `command`.
    pub fn options(&self, command: &str) -> anyhow::Result<crate::ops::ApplyOptions> {
        let deadline = crate::spec::quantity::parse_duration(&self.timeout)
            .map_err(|e| ExitError::usage(format!("--timeout: {e}")))?;
        Ok(crate::ops::ApplyOptions {
            concurrency: self.concurrency,
            deadline,
            command: command.into(),
            asset_check: (!self.skip_asset_check).then(|| crate::ops::assets::CheckOptions {
                concurrency: 16,
                ..Default::default()
            }),
            live: self.drain.live()?,
            cloud_only: self.drain.cloudonly,
            snapshot_to: None,
        })
    }

    /// The lock's lease time-to-live.
    pub fn lock_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lock_ttl.max(1))
    }
}

/// How instances leave a running cluster before their VMs are deleted (a scale-down, `delete
/// instancegroup`, a rolling update): kops' drain flags, shared by every verb that deletes.
#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// Change instances through the cloud only: no drain, no etcd member removal, no validation
    /// (kops' --cloudonly), for a cluster whose API server is broken. Pods on a deleted
    /// instance stop with it.
    #[arg(long)]
    pub cloudonly: bool,
    /// Give up draining a node after this long (PodDisruptionBudgets refusing evictions).
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub drain_timeout: String,
    /// Stop when a node cannot be drained (false: delete it anyway).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub fail_on_drain_error: bool,
    /// Evict pods with emptyDir volumes too (their data is lost), as `kubectl drain` does.
    #[arg(long)]
    pub delete_emptydir_data: bool,
    /// How often waits ask the API server again (tests use a short one).
    #[arg(long, value_name = "DURATION", default_value = "2s", hide = true)]
    pub poll_interval: String,
    /// How to reach the API server.
    #[command(flatten)]
    pub api: ApiArgs,
}

impl DrainArgs {
    /// The engine's options for the Kubernetes side (validation at its defaults: the verbs
    /// that validate set their own).
    pub fn live(&self) -> anyhow::Result<crate::ops::live::LiveOptions> {
        let duration = |flag: &str, v: &str| {
            crate::spec::quantity::parse_duration(v)
                .map_err(|e| ExitError::usage(format!("{flag} {v}: {e}")))
        };
        let poll = duration("--poll-interval", &self.poll_interval)?;
        Ok(crate::ops::live::LiveOptions {
            api: self.api.access(),
            drain: crate::k8s::drain::DrainOptions {
                timeout: duration("--drain-timeout", &self.drain_timeout)?,
                delete_emptydir_data: self.delete_emptydir_data,
                poll,
            },
            fail_on_drain_error: self.fail_on_drain_error,
            poll,
            ..Default::default()
        })
    }
}

/// How verbs that talk to the cluster's API server reach it, shared by `validate`,
/// `rolling-update` and `update --wait-ready`.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Use this kubeconfig's context instead of an admin certificate kprov mints from the
    /// cluster CA (how an API server behind a tunnel is reached).
    #[arg(long, env = "KUBECONFIG", hide_env_values = true, value_name = "FILE")]
    pub kubeconfig: Option<String>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, value_name = "NAME", requires = "kubeconfig")]
    pub context: Option<String>,
}

impl ApiArgs {
    /// The engine's view of these flags.
    pub fn access(&self) -> crate::ops::access::ApiAccess {
        crate::ops::access::ApiAccess {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }
}

/// Locking options shared by mutating verbs.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// Break the cluster's lock first (when a run died and its lease has not expired yet). Asks
    /// for confirmation unless --yes is given.
    #[arg(long)]
    pub force_unlock: bool,
}

impl LockArgs {
    /// With --force-unlock, break the cluster's lock (after asking, unless `yes`), saying whose
    /// it was; otherwise do nothing.
    pub async fn break_if_asked(
        &self,
        repo: &crate::repo::Repo,
        cluster: &str,
        yes: bool,
    ) -> anyhow::Result<()> {
        if !self.force_unlock {
            return Ok(());
        }
        let Some(who) = crate::ops::lock::holder(repo, cluster).await? else {
            return Ok(());
        };
        if !yes
            && !confirm(&format!(
                "Break the lock of cluster {cluster} held by {who}?"
            ))?
        {
            return Err(ExitError::usage("lock not broken"));
        }
        crate::ops::lock::break_lock(repo, cluster).await?;
        eprintln!("Broke the lock of cluster {cluster} (was held by {who}).");
        Ok(())
    }
}

/// The default state store: `file://$XDG_DATA_HOME/kprov/state` (or `~/.local/share/...`).
pub fn default_state_url() -> anyhow::Result<String> {
    let base = directories::BaseDirs::new()
        .context("cannot find your home directory; pass --state file:///PATH")?;
    Ok(format!(
        "file://{}",
        base.data_dir().join("kprov").join("state").display()
    ))
}

/// Open the state store named by `--state` (or the default).
pub async fn open_store(url: Option<&str>) -> anyhow::Result<Arc<dyn StateStore>> {
    let (url, from) = match url {
        Some(u) => (u.to_string(), flag_or_env("--state", "KPROV_STATE_STORE")),
        None => (default_state_url()?, "the default state store".to_string()),
    };
    crate::store::open(&url).await.map_err(|e| match e {
        kprov_state::StateError::InvalidUrl { .. } => ExitError::usage(format!("{from}: {e}")),
        e => ExitError::usage(format!("{e}")),
    })
}

/// Where an option with an environment fallback got its value, for messages: `--flag` when it
/// is on the command line, else `env VAR` when the variable is set, else `--flag`.
pub fn flag_or_env(flag: &str, var: &str) -> String {
    let on_command_line = std::env::args_os().any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    if !on_command_line && std::env::var_os(var).is_some() {
        format!("env {var}")
    } else {
        flag.to_string()
    }
}

/// Refuse a `KPROV_ASSET_SHA256SUMS` that cannot be used. The renderer only warns and keeps the
/// pinned sums (safe, but the node's download then fails much later); a command that renders
/// user-data stops here instead, naming the variable, the line and the fix.
pub fn check_asset_sha256sums() -> anyhow::Result<()> {
    const VAR: &str = "KPROV_ASSET_SHA256SUMS";
    let Some(path) = std::env::var_os(VAR).filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let path = std::path::PathBuf::from(path);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ExitError::usage(format!(
            "env {VAR}={}: cannot read the file: {e}; fix: set it to a file in `sha256sum` format \
             (`sha256sum kubeadm kubelet kubectl > SUMS`), or unset it to use the pinned checksums",
            path.display()
        ))
    })?;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let ok = matches!((parts.next(), parts.next()),
            (Some(sum), Some(_)) if sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err(ExitError::usage(format!(
                "env {VAR}: {}:{}: not a `sha256sum` line (64 hex digits, spaces, a file name); fix: \
                 write lines like `<sha256>  kubeadm`, e.g. with `sha256sum kubeadm > SUMS`",
                path.display(),
                i + 1
            )));
        }
    }
    Ok(())
}

/// Which cluster a command without NAME acts on: `--name`, else `KPROV_CLUSTER_NAME` (both via
/// `cli.name`), else the only cluster in the store.
pub async fn current_cluster(
    explicit: Option<&str>,
    cli_name: Option<&str>,
    repo: &crate::repo::Repo,
) -> anyhow::Result<String> {
    if let Some(n) = explicit {
        return Ok(n.to_string());
    }
    if let Some(n) = cli_name {
        // Named by --name or KPROV_CLUSTER_NAME: say which when it is not there.
        if repo.load(n).await?.is_none() {
            let from = flag_or_env("--name", "KPROV_CLUSTER_NAME");
            let clusters = repo.clusters().await?;
            let there = if clusters.is_empty() {
                "none".to_string()
            } else {
                clusters.join(", ")
            };
            return Err(ExitError::usage(format!(
                "{from}: cluster {n:?} is not in {store} (clusters there: {there}); fix: name an existing cluster \
                 with --name or KPROV_CLUSTER_NAME, or unset them",
                store = repo.store.url()
            )));
        }
        return Ok(n.to_string());
    }
    let clusters = repo.clusters().await?;
    match clusters.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ExitError::usage(format!(
            "no cluster in {}; create one with `kprov create cluster NAME --provider zstack|aws|libvirt`",
            repo.store.url()
        ))),
        many => Err(ExitError::usage(format!(
            "several clusters in {}: {}; name one with `--name CLUSTER` or KPROV_CLUSTER_NAME",
            repo.store.url(),
            many.join(", ")
        ))),
    }
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    run_command(cli).await.map_err(with_fix)
}

/// Add how to fix it to errors whose own message cannot know (a cloud endpoint nobody answers
/// on), keeping the exit code.
fn with_fix(e: anyhow::Error) -> anyhow::Error {
    let unreachable =
        e.chain()
            .find_map(|c| match c.downcast_ref::<kprov_providers::CloudError>() {
                Some(kprov_providers::CloudError::Unreachable {
                    provider, endpoint, ..
                }) => Some((*provider, endpoint.clone())),
                _ => None,
            });
    match unreachable {
        Some((provider, endpoint)) => {
            let fix = match provider {
                "libvirt" => format!(
                    "check that libvirtd answers at {endpoint} (`virsh -c {endpoint} version`; spec.provider.libvirt.uri) and, \
                     if it is only slow, raise KPROV_LIBVIRT_KEEPALIVE_TIMEOUT, then re-run"
                ),
                _ => format!(
                    "check that {endpoint} is the cloud's API address (spec.provider, or the \
                     --zstack-endpoint / AWS_ENDPOINT_URL it came from) and that it answers from this machine, then re-run"
                ),
            };
            ExitError {
                code: exit_code(&e),
                message: format!("{e:#}; fix: {fix}"),
            }
            .into()
        }
        None => e,
    }
}

async fn run_command(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Create(ref a) => create::run(&cli, a).await,
        Command::Get(ref a) => get::run(&cli, a).await,
        Command::Update(ref a) => update::run(&cli, a).await,
        Command::RollingUpdate(ref a) => rolling_update::run(&cli, a).await,
        Command::Validate(ref a) => validate::run(&cli, a).await,
        Command::Edit(ref a) => edit::run(&cli, a).await,
        Command::Delete(ref a) => delete::run(&cli, a).await,
        Command::Export(ref a) => export::run(&cli, a).await,
        Command::Backup(ref a) => backup::run(&cli, a).await,
        Command::Restore(ref a) => restore::run(&cli, a).await,
        Command::State(ref a) => state::run(&cli, a).await,
        Command::Mirror(ref a) => mirror::run(&cli, a).await,
        Command::Check(ref a) => assets::run_check(&cli, a).await,
        Command::Version => {
            println!("kprov {}", env!("CARGO_PKG_VERSION"));
            println!(
                "kubernetes versions: {}",
                crate::spec::versions::supported().join(", ")
            );
            println!(
                "providers: {}",
                crate::cloud::compiled_providers().join(", ")
            );
            Ok(())
        }
        Command::Completion(ref a) => completion::run(a),
    }
}

/// Ask the user to confirm on the terminal; without a terminal, refuse.
pub fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(ExitError::usage(format!(
            "{question} — no terminal to confirm on; add --yes"
        )));
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}
