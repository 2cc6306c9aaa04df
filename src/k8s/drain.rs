//! Taking a node out of service as `kubectl drain` does (and kops with it): cordon, then evict
//! every pod through the Eviction API (policy/v1) so PodDisruptionBudgets hold — a 429 is
//! retried until the timeout — skipping DaemonSet and mirror pods, refusing pods with emptyDir
//! data unless told to delete it; then the Node object is deleted. Every step is idempotent, so
//! a run killed half-way drains again from wherever the node is.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};

use super::validate::condition;
use super::{status_code, K8sError};

/// How to drain.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Give up (with the pods still there named) after this long.
    pub timeout: Duration,
    /// Evict pods using emptyDir volumes (their data is lost), as `--delete-emptydir-data`.
    pub delete_emptydir_data: bool,
    /// Pause between passes while budgets refuse evictions or pods terminate.
    pub poll: Duration,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            timeout: Duration::from_secs(15 * 60),
            delete_emptydir_data: false,
            poll: Duration::from_secs(2),
        }
    }
}

/// What a drain did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Drained {
    /// Evictions the API accepted.
    pub evicted: usize,
    /// Evictions refused by a disruption budget (429) and retried.
    pub refused: usize,
}

/// Why a pod stays on a draining node: it is not evicted.
fn skipped(pod: &Pod) -> Option<&'static str> {
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    if mirror {
        return Some("mirror pod");
    }
    let daemon = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    if daemon {
        return Some("DaemonSet pod");
    }
    None
}

fn uses_empty_dir(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()))
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn name_of(pod: &Pod) -> (String, String) {
    (
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Mark `node` unschedulable (`spec.unschedulable: true`). A Node already gone is fine.
pub async fn cordon(client: &kube::Client, node: &str) -> Result<(), K8sError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({"spec": {"unschedulable": true}});
    match nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(K8sError::api(format!("cordoning node {node}"), e)),
    }
}

/// The pods on `node` (all namespaces).
pub async fn pods_on(client: &kube::Client, node: &str) -> Result<Vec<Pod>, K8sError> {
    let pods: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    Ok(pods
        .list(&lp)
        .await
        .map_err(|e| K8sError::api(format!("listing the pods on node {node}"), e))?
        .items)
}

/// Evict every pod of `node` that must go, until none is left or `opts.timeout` passes;
/// `left` is told how many pods are left after each pass. The node should be cordoned first.
pub async fn drain(
    client: &kube::Client,
    node: &str,
    opts: &DrainOptions,
    left: &(dyn Fn(usize) + Send + Sync),
) -> Result<Drained, K8sError> {
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let mut done = Drained::default();
    loop {
        let pods: Vec<Pod> = pods_on(client, node)
            .await?
            .into_iter()
            .filter(|p| skipped(p).is_none())
            .collect();
        left(pods.len());
        if pods.is_empty() {
            return Ok(done);
        }
        if !opts.delete_emptydir_data {
            let local: Vec<String> = pods
                .iter()
                .filter(|p| uses_empty_dir(p) && !finished(p))
                .map(|p| format!("{}/{}", name_of(p).0, name_of(p).1))
                .collect();
            if !local.is_empty() {
                return Err(K8sError::Refused(format!(
                    "node {node} runs pods with emptyDir data that draining would delete: {}; \
                     fix: pass --delete-emptydir-data to evict them anyway",
                    local.join(", ")
                )));
            }
        }
        let mut blocked = Vec::new();
        for pod in &pods {
            let (ns, name) = name_of(pod);
            if pod.metadata.deletion_timestamp.is_some() {
                continue; // terminating: wait for it to go
            }
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            match api.evict(&name, &EvictParams::default()).await {
                Ok(_) => done.evicted += 1,
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) if status_code(&e) == Some(429) => {
                    done.refused += 1;
                    blocked.push(format!("{ns}/{name}"));
                }
                Err(e) => return Err(K8sError::api(format!("evicting pod {ns}/{name}"), e)),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let names: Vec<String> = pods
                .iter()
                .map(|p| format!("{}/{}", name_of(p).0, name_of(p).1))
                .collect();
            return Err(K8sError::Timeout(format!(
                "draining node {node}: {} pod(s) still there after {:?}: {}{}; fix: raise --drain-timeout, \
                 or make room for them (their PodDisruptionBudgets allow no disruption now)",
                pods.len(),
                opts.timeout,
                names.join(", "),
                if blocked.is_empty() { String::new() } else { format!(" (refused by a disruption budget: {})", blocked.join(", ")) }
            )));
        }
        tokio::time::sleep(opts.poll).await;
    }
}

/// Delete the Node object `node` (its instance is going). A Node already gone is fine.
pub async fn delete_node(client: &kube::Client, node: &str) -> Result<(), K8sError> {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.delete(node, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(K8sError::api(format!("deleting node {node}"), e)),
    }
}

/// Wait until Node `node` exists and is Ready, polling every `poll`, for at most `timeout`.
pub async fn wait_ready(
    client: &kube::Client,
    node: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<(), K8sError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let state = match nodes.get_opt(node).await {
            Ok(Some(n)) if condition(&n, "Ready") == Some(true) => return Ok(()),
            Ok(Some(_)) => "registered but not Ready".to_string(),
            Ok(None) => "not registered".to_string(),
            Err(e) => format!("not readable ({e})"),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(K8sError::Timeout(format!(
                "node {node} is still {state} after {timeout:?}; fix: look at the instance's console \
                 (cloud-init, kubelet), then re-run — the roll continues from here"
            )));
        }
        tokio::time::sleep(poll).await;
    }
}
