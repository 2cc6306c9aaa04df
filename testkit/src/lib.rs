//! kprov's test kit: the one place the workspace's tests and benchmarks get their test peers,
//! the audited kprov command, generators and tracers from. A dev-dependency only; it never
//! depends on `kprov` (the binary under test is passed in as a [`KprovBin`]).
//!
//! Every peer is started on a free loopback port and stopped by PID when its guard drops. A
//! missing peer fails the test naming `bash tests/peers/install.sh`, unless
//! `KPROV_SKIP_PEERS=1` (then the test prints a loud SKIPPED line and returns) — see [`peers`].
//!
//! | module | what |
//! |---|---|
//! | [`ports`], [`wait`], [`process`], [`peers`], [`raw_http`] | free ports, polling, the child-process guard, finding peers, a minimal HTTP client |
//! | [`kprov_cmd`] | the audited kprov command (`tests/peers/audit-run.sh`) and a driver with its own store |
//! | [`moto`], [`fault_proxy`], [`registry`], [`registry_storage`], [`skopeo`], [`nginx`], [`token_server`], [`test_ca`], [`containerd`], [`http_server`] | peers |
//! | [`images`], [`prng`], [`tiny_image`] | OCI images to push: a generated Kubernetes-like set, a tiny real one |
//! | [`fetch_trace`], [`mutate`] | what a rendered node fetches; mutated inputs for property tests |
//! | [`vm`] | the real-VM libvirt harness |
//! | `aws`, `s3_store`, `zstack_sim` (features `aws`, `state`, `zstack-sim`) | SDK reads of moto, `s3://` stores, the ZStack simulator and a REST client |
//! | [`logs`] | `tracing` output captured in-process |
//! | `kube_api` (feature `kube-api`) | a Kubernetes API server stand-in: k8s-openapi objects over TLS with client certificates, nodes/pods/PDBs/secrets, evictions, port-forward |

pub mod containerd;
pub mod etcd;
pub mod fault_proxy;
pub mod fetch_trace;
pub mod http_server;
pub mod images;
pub mod kprov_cmd;
pub mod logs;
pub mod moto;
pub mod mutate;
pub mod nginx;
pub mod peers;
pub mod ports;
pub mod prng;
pub mod process;
pub mod raw_http;
pub mod registry;
pub mod registry_storage;
pub mod skopeo;
pub mod test_ca;
pub mod tiny_image;
pub mod token_server;
pub mod vm;
pub mod wait;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "kube-api")]
pub mod kube_api;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "state")]
pub mod s3_store;
#[cfg(feature = "zstack-sim")]
pub mod zstack_sim;

pub use kprov_cmd::{Kprov, KprovBin};
pub use ports::free_port;
pub use process::ChildGuard;
pub use wait::{wait_for, wait_until};
