use std::sync::Arc;
use std::time::Duration;

use kprov_providers::Cloud;
use kprov_testkit::memory::{Fault, MemoryCloud};

use super::*;
use crate::plan::{desired, diff};

fn settings() -> Settings {
    Settings {
        concurrency: 4,
        retry: RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
        deadline: Duration::from_secs(30),
    }
}

fn ud() -> Arc<dyn UserData> {
    Arc::new(|r: &InstanceRequest, ctx: &RenderContext| {
        Ok(format!(
            "#cloud-config\nhostname: {}\n# join {}\n",
            r.name, ctx.control_plane_endpoint
        )
        .into_bytes())
    })
}

async fn plan_for(cloud: &MemoryCloud, nodes: u32) -> Plan {
    let d = desired(&crate::plan::tests::demo(nodes, "{cpu: 16, memory: 64Gi}"));
    diff(&d, &cloud.list_instances("demo").await.unwrap())
}

#[tokio::test]
async fn apply_creates_everything_then_converges() {
    let cloud = Arc::new(MemoryCloud::new());
    let plan = plan_for(&cloud, 5).await;
    let out = apply(
        cloud.clone(),
        &plan,
        ud(),
        &settings(),
        &Journal::disabled(),
        &Progress::hidden(),
    )
    .await
    .unwrap();
    assert_eq!(out.created.len(), 6);
    assert_eq!(cloud.creates(), 6);
    let again = plan_for(&cloud, 5).await;
    assert!(
        again.is_empty(),
        "second plan must be empty: {:?}",
        again.changes
    );
}

#[tokio::test]
async fn workers_are_told_the_first_control_planes_address() {
    let cloud = Arc::new(MemoryCloud::new());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let ud: Arc<dyn UserData> = Arc::new(move |r: &InstanceRequest, ctx: &RenderContext| {
        s2.lock()
            .unwrap()
            .push((r.name.clone(), ctx.control_plane_endpoint.clone()));
        Ok(Vec::new())
    });
    let plan = plan_for(&cloud, 2).await;
    apply(
        cloud.clone(),
        &plan,
        ud,
        &settings(),
        &Journal::disabled(),
        &Progress::hidden(),
    )
    .await
    .unwrap();
    let seen = seen.lock().unwrap().clone();
    let cp = cloud
        .list_instances("demo")
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.name == "demo-control-plane-0")
        .unwrap();
    let want = format!("{}:6443", cp.address.unwrap());
    for (name, ep) in seen {
        if name == "demo-control-plane-0" {
            assert_eq!(ep, "", "the first control plane has no endpoint to join");
        } else {
            assert_eq!(ep, want, "{name} must join the first control plane");
        }
    }
}

#[tokio::test]
async fn transient_bursts_are_retried() {
    let cloud = Arc::new(MemoryCloud::new());
    let plan = plan_for(&cloud, 3).await;
    cloud.inject(Fault::TransientBurst { from: 2, count: 4 });
    let out = apply(
        cloud.clone(),
        &plan,
        ud(),
        &settings(),
        &Journal::disabled(),
        &Progress::hidden(),
    )
    .await
    .unwrap();
    assert_eq!(out.created.len(), 4);
    assert!(
        out.retries >= 4,
        "each failed call is retried (retries={})",
        out.retries
    );
}

#[tokio::test]
async fn fatal_errors_are_not_retried_and_a_rerun_resumes() {
    let cloud = Arc::new(MemoryCloud::new());
    let plan = plan_for(&cloud, 3).await;
    cloud.inject(Fault::FatalAt(5)); // 1 list, 2 network, 3 control plane, 4.. workers
    let err = apply(
        cloud.clone(),
        &plan,
        ud(),
        &settings(),
        &Journal::disabled(),
        &Progress::hidden(),
    )
    .await
    .unwrap_err();
    match &err {
        ApplyError::Failed { failed, .. } => assert_eq!(*failed, 1),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("re-run"), "{err}");
    cloud.clear_faults();
    let plan = plan_for(&cloud, 3).await;
    assert_eq!(
        plan.changes.len(),
        1,
        "only the failed instance is left to do"
    );
    apply(
        cloud.clone(),
        &plan,
        ud(),
        &settings(),
        &Journal::disabled(),
        &Progress::hidden(),
    )
    .await
    .unwrap();
    assert!(plan_for(&cloud, 3).await.is_empty());
    assert_eq!(cloud.creates(), 4, "no instance was created twice");
}

#[tokio::test]
async fn crash_at_every_point_converges_without_duplicates() {
    // Stop the "process" after n mutating calls for every n, then re-run without faults.
    for n in 0..8 {
        let cloud = Arc::new(MemoryCloud::new());
        let plan = plan_for(&cloud, 5).await;
        cloud.inject(Fault::CrashAfter(n));
        let _ = apply(
            cloud.clone(),
            &plan,
            ud(),
            &settings(),
            &Journal::disabled(),
            &Progress::hidden(),
        )
        .await;
        cloud.clear_faults();
        let plan = plan_for(&cloud, 5).await;
        apply(
            cloud.clone(),
            &plan,
            ud(),
            &settings(),
            &Journal::disabled(),
            &Progress::hidden(),
        )
        .await
        .unwrap();
        let list = cloud.list_instances("demo").await.unwrap();
        assert_eq!(
            list.len(),
            6,
            "crash after {n}: exactly the desired instances"
        );
        assert_eq!(cloud.creates(), 6, "crash after {n}: nothing created twice");
    }
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let cloud = Arc::new(MemoryCloud::new());
    cloud.inject(Fault::Latency(Duration::from_millis(50)));
    let plan = plan_for(&cloud, 16).await;
    let s = Settings {
        concurrency: 4,
        ..settings()
    };
    let t = std::time::Instant::now();
    apply(
        cloud.clone(),
        &plan,
        ud(),
        &s,
        &Journal::disabled(),
        &Progress::hidden(),
    )
    .await
    .unwrap();
    let el = t.elapsed();
    // network (1) + first control plane (1) + 16 workers in waves of 4 (4) = 6 latency slots
    assert!(
        el >= Duration::from_millis(6 * 50),
        "took {el:?}: more than 4 calls ran at once"
    );
    assert!(
        el < Duration::from_millis(6 * 50 * 3),
        "took {el:?}: calls were not run in parallel"
    );
}

#[tokio::test]
async fn deadline_stops_a_hanging_apply() {
    let cloud = Arc::new(MemoryCloud::new());
    cloud.inject(Fault::Latency(Duration::from_secs(5)));
    let plan = plan_for(&cloud, 1).await;
    let s = Settings {
        deadline: Duration::from_millis(100),
        ..settings()
    };
    let err = apply(
        cloud.clone(),
        &plan,
        ud(),
        &s,
        &Journal::disabled(),
        &Progress::hidden(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ApplyError::Deadline { .. }), "{err}");
}

#[tokio::test]
async fn delete_all_removes_instances_before_the_network() {
    let cloud = Arc::new(MemoryCloud::new());
    let plan = plan_for(&cloud, 3).await;
    apply(
        cloud.clone(),
        &plan,
        ud(),
        &settings(),
        &Journal::disabled(),
        &Progress::hidden(),
    )
    .await
    .unwrap();
    assert_eq!(cloud.list_resources("demo").await.unwrap().len(), 5);
    cloud.inject(Fault::TransientBurst {
        from: cloud.calls() + 2,
        count: 2,
    });
    let n = delete_all(
        cloud.clone(),
        "demo",
        &settings(),
        Duration::from_secs(10),
        &Progress::hidden(),
    )
    .await
    .unwrap();
    assert_eq!(n, 5);
    assert!(cloud.list_resources("demo").await.unwrap().is_empty());
}

#[tokio::test]
async fn journal_records_tasks_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn kprov_state::StateStore> =
        Arc::new(kprov_state::file::FileStore::new(dir.path()));
    let (j, prev) = Journal::begin(store.clone(), "demo", "update --yes", 1)
        .await
        .unwrap();
    assert!(prev.is_none());
    let cloud = Arc::new(MemoryCloud::new());
    cloud.inject(Fault::FatalAt(4));
    let plan = plan_for(&cloud, 2).await;
    let _ = apply(
        cloud.clone(),
        &plan,
        ud(),
        &settings(),
        &j,
        &Progress::hidden(),
    )
    .await;
    // a new run sees the unfinished journal of the failed one
    let (j2, prev) = Journal::begin(store.clone(), "demo", "update --yes", 1)
        .await
        .unwrap();
    let prev = prev.expect("unfinished journal kept");
    assert!(prev
        .tasks
        .values()
        .any(|t| matches!(t, journal::TaskState::Failed(_))));
    assert!(prev.tasks.values().any(|t| *t == journal::TaskState::Done));
    j2.finish().await.unwrap();
    assert!(store
        .get("demo/journal/current.json")
        .await
        .unwrap()
        .is_none());
    assert!(store.get("demo/journal/last.json").await.unwrap().is_some());
}
