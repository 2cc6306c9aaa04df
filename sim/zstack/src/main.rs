//! `kprov-zstack-sim`: runs the ZStack simulator as a process on 127.0.0.1.

use anyhow::{bail, Context, Result};
use clap::Parser;
use kprov_zstack_sim::{Inventory, SimConfig, Simulator};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A ZStack REST API simulator (loopback only).
#[derive(Debug, Parser)]
#[command(name = "kprov-zstack-sim", version, about)]
struct Args {
    /// TCP port (0 = pick a free one; see --port-file).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Listen address; only loopback addresses are accepted.
    #[arg(long, default_value = "127.0.0.1")]
    listen: String,
    /// Fixture YAML (default: the built-in seed inventory).
    #[arg(long)]
    inventory: Option<PathBuf>,
    /// Persist state here (JSON, atomic writes) and load it on start.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Duration of async jobs in milliseconds.
    #[arg(long, default_value_t = 50)]
    job_delay_ms: u64,
    /// Session lifetime in seconds.
    #[arg(long, default_value_t = 7200)]
    session_ttl_secs: u64,
    /// Write the bound port to this file once listening (written atomically).
    #[arg(long)]
    port_file: Option<PathBuf>,
}

/// Writes via a temp file + rename so a script polling the port file never reads a partial one.
fn write_atomically(path: &PathBuf, contents: &str) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // `localhost` is accepted as a spelling of 127.0.0.1; names are not resolved otherwise.
    let listen: IpAddr = if args.listen == "localhost" {
        IpAddr::from([127, 0, 0, 1])
    } else {
        args.listen
            .parse()
            .with_context(|| format!("--listen {:?} is not an IP address", args.listen))?
    };
    if !listen.is_loopback() {
        bail!(
            "refusing to listen on {listen}: kprov-zstack-sim only listens on loopback addresses (e.g. 127.0.0.1)"
        );
    }
    let inventory = match &args.inventory {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Inventory::from_yaml(&text).with_context(|| format!("loading {}", p.display()))?
        }
        None => Inventory::default_seed(),
    };
    let cfg = SimConfig {
        inventory,
        job_delay: Duration::from_millis(args.job_delay_ms),
        session_ttl: Duration::from_secs(args.session_ttl_secs),
        state_file: args.state_file.clone(),
        port: args.port,
        listen,
        ..SimConfig::default()
    };
    let sim = Simulator::start(cfg)
        .await
        .context("starting the simulator")?;
    println!("listening on {}", sim.endpoint());
    if let Some(p) = &args.port_file {
        write_atomically(p, &sim.addr.port().to_string())?;
    }

    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;

    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}
