//! The backend-agnostic conformance suite every [`StateStore`] must pass.
//!
//! Backends call [`run_all`] from their tests (the `file://` backend in-process, the `s3://`
//! backend against a real moto server). Each check panics with a message naming the broken
//! contract.

use std::sync::Arc;

use crate::{Condition, StateError, StateStore};

/// Run every check against `store`. The store should be empty (or at least have no `suite/` keys).
pub async fn run_all<S: StateStore + ?Sized>(store: &S) {
    roundtrip(store).await;
    create_if_absent(store).await;
    compare_and_swap(store).await;
    listing(store).await;
    deleting(store).await;
    invalid_keys(store).await;
}

/// Put then get returns the same bytes and version.
pub async fn roundtrip<S: StateStore + ?Sized>(s: &S) {
    assert!(
        s.get("suite/rt/missing").await.unwrap().is_none(),
        "absent key must read as None"
    );
    let v = s
        .put("suite/rt/a", b"hello", Condition::None)
        .await
        .unwrap();
    let o = s
        .get("suite/rt/a")
        .await
        .unwrap()
        .expect("written object readable");
    assert_eq!(o.bytes, b"hello");
    assert_eq!(o.version, v, "get must report the version put returned");
    let v2 = s
        .put("suite/rt/a", b"world", Condition::None)
        .await
        .unwrap();
    assert_ne!(v, v2, "new content must get a new version");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    s.put("suite/rt/big", &big, Condition::None).await.unwrap();
    assert_eq!(s.get("suite/rt/big").await.unwrap().unwrap().bytes, big);
    s.put("suite/rt/pki/ca.key", b"secret", Condition::None)
        .await
        .unwrap();
    assert_eq!(
        s.get("suite/rt/pki/ca.key").await.unwrap().unwrap().bytes,
        b"secret"
    );
}

/// `IfAbsent` creates once, then conflicts.
pub async fn create_if_absent<S: StateStore + ?Sized>(s: &S) {
    s.put("suite/ia/x", b"1", Condition::IfAbsent)
        .await
        .expect("create of absent key");
    match s.put("suite/ia/x", b"2", Condition::IfAbsent).await {
        Err(StateError::Conflict { key }) => assert_eq!(key, "suite/ia/x"),
        other => panic!("second IfAbsent put must conflict, got {other:?}"),
    }
    assert_eq!(
        s.get("suite/ia/x").await.unwrap().unwrap().bytes,
        b"1",
        "loser must not overwrite"
    );
}

/// `IfVersion` succeeds on the current version only.
pub async fn compare_and_swap<S: StateStore + ?Sized>(s: &S) {
    let v1 = s.put("suite/cas/x", b"1", Condition::None).await.unwrap();
    let v2 = s
        .put("suite/cas/x", b"2", Condition::IfVersion(v1.clone()))
        .await
        .expect("CAS on current version");
    match s
        .put("suite/cas/x", b"3", Condition::IfVersion(v1.clone()))
        .await
    {
        Err(StateError::Conflict { .. }) => {}
        other => panic!("CAS on a stale version must conflict, got {other:?}"),
    }
    match s
        .put("suite/cas/missing", b"3", Condition::IfVersion(v1))
        .await
    {
        Err(StateError::Conflict { .. }) => {}
        other => panic!("CAS on an absent key must conflict, got {other:?}"),
    }
    assert_eq!(s.get("suite/cas/x").await.unwrap().unwrap().version, v2);
}

/// `list` returns exactly the keys under a prefix, sorted.
pub async fn listing<S: StateStore + ?Sized>(s: &S) {
    for k in ["suite/ls/b/2", "suite/ls/a", "suite/ls/b/1", "suite/lsx"] {
        s.put(k, b".", Condition::None).await.unwrap();
    }
    let got = s.list("suite/ls/").await.unwrap();
    assert_eq!(got, vec!["suite/ls/a", "suite/ls/b/1", "suite/ls/b/2"]);
}

/// `delete` removes, is idempotent, and honours `IfVersion`.
pub async fn deleting<S: StateStore + ?Sized>(s: &S) {
    let v = s.put("suite/del/x", b"1", Condition::None).await.unwrap();
    s.put("suite/del/x", b"2", Condition::None).await.unwrap();
    match s.delete("suite/del/x", Condition::IfVersion(v)).await {
        Err(StateError::Conflict { .. }) => {}
        other => panic!("delete with a stale version must conflict, got {other:?}"),
    }
    s.delete("suite/del/x", Condition::None).await.unwrap();
    assert!(s.get("suite/del/x").await.unwrap().is_none());
    s.delete("suite/del/x", Condition::None)
        .await
        .expect("deleting an absent key succeeds");
    assert!(s.list("suite/del/").await.unwrap().is_empty());
}

/// Keys that escape the store or are malformed are refused.
pub async fn invalid_keys<S: StateStore + ?Sized>(s: &S) {
    for k in ["", "/abs", "a/../b", "a//b", "trailing/"] {
        match s.put(k, b"x", Condition::None).await {
            Err(StateError::InvalidKey { .. }) => {}
            other => panic!("key {k:?} must be refused, got {other:?}"),
        }
    }
}

/// `n` writers race to create one key: exactly one must win.
pub async fn racing_creates(store: Arc<dyn StateStore>, n: usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.put(
                "suite/race/x",
                format!("{i}").as_bytes(),
                Condition::IfAbsent,
            )
            .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StateError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error in race: {e}"),
        }
    }
    assert_eq!(
        wins, 1,
        "exactly one of {n} racing IfAbsent writers must win"
    );
}
