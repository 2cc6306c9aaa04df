//! `kprov validate cluster [NAME] [--wait 10m] [-o table|yaml|json] [--kubeconfig FILE]`:
//! whether the cluster works (kops' `validate cluster`). Exit 0 when valid, 1 when not.

use clap::Args;
use serde::Serialize;

use super::{current_cluster, open_store, ApiArgs, Cli, Output};
use crate::error::ExitError;
use crate::k8s::validate::Validation;
use crate::ops;
use crate::repo::Repo;

/// Arguments of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// `cluster` (optional, kops-style).
    #[arg(value_parser = ["cluster"], hide_possible_values = true)]
    pub resource: Option<String>,
    /// Cluster (default: --name, KPROV_CLUSTER_NAME, or the only cluster in the store).
    pub cluster: Option<String>,
    /// Keep validating until the cluster is valid or this long has passed (e.g. 10m).
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub wait: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
    /// How to reach the API server.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// What `-o json|yaml` prints.
#[derive(Serialize)]
struct Report<'a> {
    cluster: &'a str,
    valid: bool,
    #[serde(flatten)]
    validation: &'a Validation,
}

/// The NODES and VALIDATION ERRORS tables and the verdict, as kops prints them.
pub fn print_table(name: &str, v: &Validation) {
    let nodes: Vec<Vec<String>> = v
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.role.clone(),
                if n.ready { "True" } else { "False" }.into(),
                if n.unschedulable {
                    "SchedulingDisabled"
                } else {
                    ""
                }
                .into(),
            ]
        })
        .collect();
    println!("NODES");
    print!(
        "{}",
        super::output::table(&["NAME", "ROLE", "READY", "STATUS"], &nodes)
    );
    if v.is_valid() {
        println!("\nYour cluster {name} is ready");
        return;
    }
    let failures: Vec<Vec<String>> = v
        .failures
        .iter()
        .map(|f| vec![f.kind.to_string(), f.name.clone(), f.message.clone()])
        .collect();
    println!("\nVALIDATION ERRORS");
    print!(
        "{}",
        super::output::table(&["KIND", "NAME", "MESSAGE"], &failures)
    );
    println!(
        "\nValidation of cluster {name} failed: {} error(s)",
        v.failures.len()
    );
}

/// Run `validate`.
pub async fn run(cli: &Cli, a: &ValidateArgs) -> anyhow::Result<()> {
    let wait = crate::spec::quantity::parse_duration(&a.wait)
        .map_err(|e| ExitError::usage(format!("--wait {}: {e}", a.wait)))?;
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = current_cluster(a.cluster.as_deref(), cli.name.as_deref(), &repo).await?;
    let progress = cli.terminal().progress();
    let v = ops::validate::validate(
        &repo,
        &name,
        &a.api.access(),
        wait,
        ops::validate::VALIDATE_POLL,
        &progress,
    )
    .await?;
    let report = Report {
        cluster: &name,
        valid: v.is_valid(),
        validation: &v,
    };
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&report)?),
        Output::Table => print_table(&name, &v),
    }
    if v.is_valid() {
        Ok(())
    } else {
        Err(ExitError {
            code: 1,
            message: format!(
                "cluster {name} is not valid: {} error(s){}",
                v.failures.len(),
                if wait.is_zero() {
                    "; fix: wait with --wait 10m while it comes up".to_string()
                } else {
                    format!(" after waiting {}", a.wait)
                }
            ),
        }
        .into())
    }
}
