//! The whole job end to end, driving the real `kprov` binary against simulated clouds: the
//! ZStack simulator (`zstack_e2e`), moto's EC2 and ELBv2 (`aws_e2e`; a rolling update killed at 20 AWS calls, `aws_rolling`), and `s3://` state stores
//! on moto with clusters on the simulator (`s3_cli`): create → plan → apply → no-op → delete,
//! kill -9 matrices, cloud faults through the fault proxy, locks and leases; the mirror check
//! before a create (`asset_precheck`); rolling updates on the simulator (`rolling_update`), through the Kubernetes API stand-in
//! (`rolling_live`; killed at API and etcd points of a control-plane roll, `rolling_crash`), scale-down and `delete ig` draining first (`scale_down`); kprov's etcd
//! client against real etcd members (`etcd_members`); control planes behind a ZStack VIP and load
//! balancer, killed at every load-balancer call (`zstack_ha`).

use kprov_testkit::KprovBin;

/// The kprov binary under test.
const KPROV: KprovBin = KprovBin::new(env!("CARGO_BIN_EXE_kprov"));

mod asset_precheck;
mod aws_e2e;
mod aws_rolling;
mod downtime;
mod etcd_backup;
mod etcd_members;
mod kube_standin;
mod rolling_crash;
mod rolling_live;
mod rolling_update;
mod s3_cli;
mod scale_down;
mod zstack_e2e;
mod zstack_ha;
