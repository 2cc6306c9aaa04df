//! kill -9 of `rolling-update --yes --cloudonly` on AWS (a real moto server behind the fault
//! proxy) at 20 points spread over a whole roll of a 2-node group, the node flavor toggled
//! between rolls: the nth AWS call of the roll hangs and is dropped, kprov is killed while it
//! waits, and a re-run (`--force-unlock`) finishes. At every kill point the group still had
//! its 2 nodes (maxUnavailable 0); after every re-run the cluster holds exactly its 4
//! instances, no instance-id twice, the group all of the new flavor, the other groups
//! untouched, and `update` has nothing to do. The cloud is read through the SDK, never
//! through kprov's own view.
#![cfg(feature = "aws")]

use std::process::Stdio;

use kprov_testkit::aws::{clients, duplicates, live_instances, LiveInstance};
use kprov_testkit::fault_proxy::FaultProxy;
use kprov_testkit::moto::Moto;

use crate::aws_e2e::{kill_when_fired, spec, Env};

/// The cluster's spec with its `arm` group of flavor `flavor`.
fn with_flavor(name: &str, flavor: &str) -> String {
    spec(name, "us-east-1").replace(
        "role: node, count: 2, arch: arm64, flavor: m6g.large",
        &format!("role: node, count: 2, arch: arm64, flavor: {flavor}"),
    )
}

/// The live instances of the `arm` group (arm64, not the GPU type).
fn arm_group(live: &[LiveInstance]) -> Vec<&LiveInstance> {
    live.iter()
        .filter(|i| i.3 == "arm64" && i.2 != "g5g.xlarge")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_20_aws_calls_during_a_roll_then_rerun_converges() {
    let Some(moto) = Moto::start("the AWS rolling-update crash matrix") else {
        return;
    };
    let proxy = FaultProxy::start(&moto);
    let (ec2, _) = clients(&moto.endpoint());
    let env = Env::new(&proxy.endpoint());
    let name = "roll";
    env.create(&with_flavor(name, "m6g.large")).await;
    env.ok(&["update", "cluster", name, "--yes"]).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    let flavors = ["m6g.xlarge", "m6g.large"];
    let roll = [
        "rolling-update",
        "cluster",
        name,
        "--yes",
        "--cloudonly",
        "--instance-group",
        "arm",
    ];
    let set_flavor = |flavor: &str| {
        std::fs::write(file.path(), with_flavor(name, flavor)).unwrap();
        file.path().to_str().unwrap().to_string()
    };

    // one whole roll, to count its calls
    let f = set_flavor(flavors[0]);
    env.ok(&["create", "-f", &f, "--replace"]).await;
    let before = proxy.total();
    env.ok(&roll).await;
    let calls = proxy.total() - before;
    assert!(calls >= 20, "a roll of 2 nodes made only {calls} AWS calls");

    // 20 points over the first 90% of the calls (a roll's count varies by a few polls)
    let span = calls * 9 / 10;
    let mut killed_at = Vec::new();
    for k in 0..20u64 {
        let n = 1 + k * (span - 1) / 19;
        let flavor = flavors[(k as usize + 1) % 2];
        let f = set_flavor(flavor);
        env.ok(&["create", "-f", &f, "--replace"]).await;
        proxy.set_rules(&format!(
            r#"[{{"skip":{},"times":1,"delay_ms":30000,"mode":"drop"}}]"#,
            n - 1
        ));
        let mut child = env
            .cmd(&roll)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let killed = kill_when_fired(&proxy, &mut child).await;
        proxy.clear();
        let at_kill = live_instances(&ec2, name).await;
        assert!(
            arm_group(&at_kill).len() >= 2,
            "kill at roll call {n}: the group went below its count: {at_kill:?}"
        );
        if killed {
            killed_at.push(n);
        }
        let mut rerun = roll.to_vec();
        rerun.push("--force-unlock");
        let out = env.ok(&rerun).await;
        assert!(
            out.contains("Rolling update of cluster roll done"),
            "after kill at call {n}: {out}"
        );
        let live = live_instances(&ec2, name).await;
        assert!(
            duplicates(&live).is_empty(),
            "after kill at call {n}: duplicates {:?} in {live:?}",
            duplicates(&live)
        );
        assert_eq!(live.len(), 4, "after kill at call {n}: {live:?}");
        let group: Vec<&str> = arm_group(&live).iter().map(|i| i.2.as_str()).collect();
        assert_eq!(group, [flavor, flavor], "after kill at call {n}: {live:?}");
        assert!(
            live.iter().any(|i| i.2 == "t3.medium") && live.iter().any(|i| i.2 == "g5g.xlarge"),
            "after kill at call {n}, the other groups are kept: {live:?}"
        );
        let noop = env.ok(&["update", "cluster", name]).await;
        assert!(
            noop.contains("No changes needed") && !noop.contains("rolling update"),
            "after kill at call {n}: {noop}"
        );
    }
    println!(
        "KILL POINTS aws rolling-update: {} of a roll's {calls} AWS calls {killed_at:?}",
        killed_at.len()
    );
    assert_eq!(killed_at.len(), 20, "{killed_at:?}");
    env.ok(&["delete", "cluster", name, "--yes"]).await;
}
