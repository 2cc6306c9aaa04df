//! kprov: provision Kubernetes clusters on ZStack, AWS and libvirt, kops-style.
//!
//! The flow is spec → state store → plan (desired − observed) → apply (a task DAG against a
//! [`kprov_providers::Cloud`]) → cloud-init on each VM. See `docs/architecture.md`.

pub mod apply;
pub mod assets;
pub mod bootstrap;
pub mod cli;
pub mod cloud;
pub mod error;
pub mod etcd;
pub mod k8s;
pub mod kubeconfig;
pub mod mirror;
pub mod ops;
pub mod pki;
pub mod plan;
pub mod repo;
pub mod report;
pub mod secrets;
pub mod spec;
pub mod store;
