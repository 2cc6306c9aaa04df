//! etcd reached the way Cluster API's KubeadmControlPlane reaches it: a port-forward through
//! the API server to a control plane's etcd pod (`kube-system/etcd-NODE`, port 2379), so no
//! etcd port has to be open to the operator's machine. Each forward listens on a loopback port
//! and opens one port-forward per TCP connection the etcd client makes.

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::net::TcpListener;

use super::K8sError;

/// etcd's client port in kubeadm's static pod.
pub const ETCD_CLIENT_PORT: u16 = 2379;

/// The static etcd pod kubeadm runs on control plane `node`.
pub fn etcd_pod(node: &str) -> String {
    format!("etcd-{node}")
}

/// A running forward to one etcd pod; stops when dropped.
pub struct Forward {
    /// `https://127.0.0.1:PORT`, to hand to the etcd client.
    pub endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forward a loopback port to `pod`'s etcd client port. Fails early when the pod cannot be
/// read (it does not exist, or the API refuses), not at the first connection.
pub async fn forward(client: &kube::Client, pod: &str) -> Result<Forward, K8sError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    pods.get(pod)
        .await
        .map_err(|e| K8sError::api(format!("reading etcd pod kube-system/{pod}"), e))?;
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| K8sError::Refused(format!("listening on a loopback port for etcd: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| K8sError::Refused(format!("loopback port for etcd: {e}")))?
        .port();
    let pod = pod.to_string();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let pods = pods.clone();
            let pod = pod.clone();
            tokio::spawn(async move {
                let mut pf = match pods.portforward(&pod, &[ETCD_CLIENT_PORT]).await {
                    Ok(pf) => pf,
                    Err(e) => {
                        tracing::debug!("port-forward to {pod}: {e}");
                        return;
                    }
                };
                let Some(mut upstream) = pf.take_stream(ETCD_CLIENT_PORT) else {
                    return;
                };
                if let Err(e) = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await {
                    tracing::debug!("port-forward to {pod}: {e}");
                }
                drop(upstream);
                let _ = pf.join().await;
            });
        }
    });
    Ok(Forward {
        endpoint: format!("https://127.0.0.1:{port}"),
        task,
    })
}
