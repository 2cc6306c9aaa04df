//! The `kprov` command: parses the command line, sets up logging (`-v`, `KPROV_LOG_FILE`), runs
//! the verb on a tokio runtime and turns its error into a message and an exit code.

use std::process::ExitCode;

use clap::Parser;
use kprov::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.unsafe_no_conditional_writes {
        // Read by the s3 backend when it opens; set before any thread exists.
        std::env::set_var("KPROV_UNSAFE_NO_CONDITIONAL_WRITES", "1");
    }
    // SDK and HTTP crates stay at warn even with -v: their debug logs can carry auth headers.
    const QUIET: &str = "aws_smithy_runtime=warn,aws_smithy_http_client=warn,aws_config=warn,aws_sdk_s3=warn,aws_sdk_ec2=warn,aws_sdk_elasticloadbalancingv2=warn,hyper=warn,hyper_util=warn,reqwest=warn,h2=warn,rustls=warn";
    let level = match cli.verbose {
        // kube-rs logs every failed request at error level; kprov reports the ones that matter
        // itself, with the object and the fix (a wait for an API server coming up is not one)
        0 => "warn,kube_client=off".to_string(),
        1 => format!("debug,{QUIET}"),
        _ => format!("trace,{QUIET}"),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KPROV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&level));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter);
    // KPROV_LOG_FILE=FILE: a debug log of every run appended to FILE (0600), whatever -v says.
    let (file_layer, file_error) = match std::env::var_os("KPROV_LOG_FILE") {
        Some(path) if !path.is_empty() => match open_log_file(std::path::Path::new(&path)) {
            Ok(f) => (
                Some(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::sync::Mutex::new(f))
                        .with_ansi(false)
                        .with_filter(tracing_subscriber::EnvFilter::new(format!("debug,{QUIET}"))),
                ),
                None,
            ),
            Err(e) => (
                None,
                Some(format!("KPROV_LOG_FILE {}: {e}", path.to_string_lossy())),
            ),
        },
        _ => (None, None),
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .init();
    if let Some(e) = file_error {
        tracing::warn!("{e}; logging to stderr only (set KPROV_LOG_FILE to a writable file)");
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}

/// Open (append, create 0600) the `KPROV_LOG_FILE`.
fn open_log_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}
