//! Bootstrap tokens in the cluster: the `bootstrap-token-ID` Secret in `kube-system` with
//! exactly the fields `kubeadm token create` writes, so that a node joining later (a scale-up
//! after the first token expired) is accepted.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};

use super::{status_code, K8sError};
use crate::pki::BootstrapToken;

/// The group kubeadm gives nodes joining with a default token.
const EXTRA_GROUPS: &str = "system:bootstrappers:kubeadm:default-node-token";

/// The Secret kubeadm writes for `token`.
pub fn secret(token: &BootstrapToken) -> Secret {
    let (id, secret) = token.token.split_once('.').unwrap_or(("", ""));
    let data: BTreeMap<String, ByteString> = [
        ("token-id", id.to_string()),
        ("token-secret", secret.to_string()),
        (
            "expiration",
            token
                .expires
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        ("usage-bootstrap-authentication", "true".into()),
        ("usage-bootstrap-signing", "true".into()),
        ("auth-extra-groups", EXTRA_GROUPS.into()),
        ("description", "kprov: joins nodes created by kprov".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("bootstrap-token-{id}")),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The cluster held the token already, unchanged.
    Present,
    /// The Secret was created.
    Created,
    /// A Secret of that id held another secret or expiry: replaced.
    Replaced,
}

/// Make sure the cluster holds `token` (create or replace its Secret).
pub async fn ensure(client: &kube::Client, token: &BootstrapToken) -> Result<Ensured, K8sError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    let want = secret(token);
    let name = want.metadata.name.clone().unwrap_or_default();
    let what = format!("bootstrap token Secret kube-system/{name}");
    match api
        .get_opt(&name)
        .await
        .map_err(|e| K8sError::api(format!("reading {what}"), e))?
    {
        Some(have) if have.data == want.data && have.type_ == want.type_ => Ok(Ensured::Present),
        Some(have) => {
            let mut next = want;
            next.metadata.resource_version = have.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &next)
                .await
                .map_err(|e| K8sError::api(format!("replacing {what}"), e))?;
            Ok(Ensured::Replaced)
        }
        None => match api.create(&PostParams::default(), &want).await {
            Ok(_) => Ok(Ensured::Created),
            // created by a run that raced this one: the same token from the state store
            Err(e) if status_code(&e) == Some(409) => Ok(Ensured::Present),
            Err(e) => Err(K8sError::api(format!("creating {what}"), e)),
        },
    }
}
