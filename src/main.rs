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
        0 => "warn".to_string(),
        1 => format!("debug,{QUIET}"),
        _ => format!("trace,{QUIET}"),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KPROV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
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
