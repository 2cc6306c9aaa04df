//! Everything a cluster owns on the libvirt host (its domains, volumes, own pool and NAT
//! network, found by metadata and name), and the deletion of one such resource; deleting what
//! is already gone succeeds.

use std::collections::BTreeMap;

use virt::error::ErrorNumber;
use virt::sys;

use super::cloud::LibvirtCloud;
use super::errors::{is, not_found, verr};
use super::{cluster_object_name, volume_prefix, PROVIDER};
use crate::{CloudError, CloudResult, Resource, ResourceKind, TAG_CLUSTER};

impl LibvirtCloud {
    /// Every resource of the cluster ([`crate::Cloud::list_resources`]).
    pub(super) async fn owned_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        let cluster = cluster.to_string();
        let own_pool = self.cfg.pool.is_none();
        self.with_conn(move |conn| {
            let mut out = Vec::new();
            let tags = |extra: &[(&str, &str)]| {
                let mut t = BTreeMap::from([(TAG_CLUSTER.to_string(), cluster.clone())]);
                for (k, v) in extra {
                    t.insert(k.to_string(), v.to_string());
                }
                t
            };
            for l in Self::list_cluster_domains(conn, &cluster)? {
                out.push(Resource {
                    kind: ResourceKind::Instance,
                    id: l.uuid,
                    name: l.name,
                    tags: l.meta.tags,
                });
            }
            let prefix = volume_prefix(&cluster);
            let own = cluster_object_name(&cluster);
            for pool in conn
                .list_all_storage_pools(0)
                .map_err(|e| verr("listing pools", e))?
            {
                let pname = pool.name().unwrap_or_default();
                if !pool.is_active().unwrap_or(false) {
                    if pname != own {
                        continue;
                    }
                    // kprov's own pool, stopped: start it to see its volumes
                    let _ = pool.create(0);
                }
                let _ = pool.refresh(0);
                for v in pool.list_volumes().unwrap_or_default() {
                    if v.starts_with(&prefix) {
                        out.push(Resource {
                            kind: ResourceKind::Volume,
                            id: format!("{pname}/{v}"),
                            name: v,
                            tags: tags(&[]),
                        });
                    }
                }
                if own_pool && pname == own {
                    out.push(Resource {
                        kind: ResourceKind::StoragePool,
                        id: pname.clone(),
                        name: pname,
                        tags: tags(&[]),
                    });
                }
            }
            if let Ok(n) = conn.lookup_network_by_name(&own) {
                let name = n.name().unwrap_or(own.clone());
                out.push(Resource {
                    kind: ResourceKind::Network,
                    id: name.clone(),
                    name,
                    tags: tags(&[]),
                });
            }
            Ok(out)
        })
        .await
    }

    /// Delete one resource of the cluster ([`crate::Cloud::delete_resource`]).
    pub(super) async fn delete_owned(&self, resource: &Resource) -> CloudResult<()> {
        let r = resource.clone();
        self.with_conn(move |conn| match r.kind {
            ResourceKind::Instance => {
                let dom = match conn.lookup_domain_by_uuid_string(&r.id) {
                    Ok(d) => d,
                    Err(e) if not_found(&e) => return Ok(()),
                    Err(e) => return Err(verr("looking up domain", e)),
                };
                if dom.is_active().unwrap_or(false) {
                    if let Err(e) = dom.destroy() {
                        if !is(&e, ErrorNumber::OperationInvalid) {
                            return Err(verr(&format!("destroying domain {}", r.name), e));
                        }
                    }
                }
                let flags = sys::VIR_DOMAIN_UNDEFINE_NVRAM
                    | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                    | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
                match dom.undefine_flags(flags) {
                    Ok(()) => Ok(()),
                    Err(e) if not_found(&e) => Ok(()),
                    Err(_) => match dom.undefine() {
                        Ok(()) => Ok(()),
                        Err(e) if not_found(&e) => Ok(()),
                        Err(e) => Err(verr(&format!("undefining domain {}", r.name), e)),
                    },
                }
            }
            ResourceKind::Volume => {
                let (pool, vol) = r.id.split_once('/').unwrap_or(("", r.id.as_str()));
                let pool = match conn.lookup_storage_pool_by_name(pool) {
                    Ok(p) => p,
                    Err(e) if not_found(&e) => return Ok(()),
                    Err(e) => return Err(verr("looking up pool", e)),
                };
                match pool.lookup_storage_vol_by_name(vol) {
                    Ok(v) => match v.delete(0) {
                        Ok(()) => Ok(()),
                        Err(e) if not_found(&e) => Ok(()),
                        Err(e) => Err(verr(&format!("deleting volume {vol}"), e)),
                    },
                    Err(e) if not_found(&e) => Ok(()),
                    Err(e) => Err(verr(&format!("looking up volume {vol}"), e)),
                }
            }
            ResourceKind::StoragePool => {
                let pool = match conn.lookup_storage_pool_by_name(&r.id) {
                    Ok(p) => p,
                    Err(e) if not_found(&e) => return Ok(()),
                    Err(e) => return Err(verr("looking up pool", e)),
                };
                if pool.is_active().unwrap_or(false) {
                    let _ = pool.refresh(0);
                    let left = pool.list_volumes().unwrap_or_default();
                    if !left.is_empty() {
                        return Err(CloudError::fatal(
                            PROVIDER,
                            "PoolNotEmpty",
                            format!("pool {} still holds {left:?}", r.id),
                            "delete those volumes or re-run `kprov delete cluster`",
                        ));
                    }
                    pool.destroy()
                        .map_err(|e| verr(&format!("stopping pool {}", r.id), e))?;
                }
                if let Err(e) = pool.delete(0) {
                    // the test driver has no directories; a remaining directory is harmless
                    tracing::debug!(pool = %r.id, "pool delete: {}", e.message());
                }
                match pool.undefine() {
                    Ok(()) => Ok(()),
                    Err(e) if not_found(&e) => Ok(()),
                    Err(e) => Err(verr(&format!("undefining pool {}", r.id), e)),
                }
            }
            ResourceKind::Network => {
                let n = match conn.lookup_network_by_name(&r.id) {
                    Ok(n) => n,
                    Err(e) if not_found(&e) => return Ok(()),
                    Err(e) => return Err(verr("looking up network", e)),
                };
                if n.is_active().unwrap_or(false) {
                    n.destroy()
                        .map_err(|e| verr(&format!("stopping network {}", r.id), e))?;
                }
                match n.undefine() {
                    Ok(()) => Ok(()),
                    Err(e) if not_found(&e) => Ok(()),
                    Err(e) => Err(verr(&format!("undefining network {}", r.id), e)),
                }
            }
            ResourceKind::Vip => Self::delete_vip(conn, &r),
            other => Err(CloudError::fatal(
                PROVIDER,
                "UnknownKind",
                format!("libvirt has no {other} resources"),
                "report this as a kprov bug",
            )),
        })
        .await
    }
}
