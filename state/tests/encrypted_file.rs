//! Client-side encryption over the `file://` backend: the decorator works on any store.

use std::sync::Arc;
use std::time::Duration;

use kprov_state::crypt::{generate_key_file, EncryptedStore, EncryptionKey, MAGIC};
use kprov_state::file::FileStore;
use kprov_state::{suite, Condition, Lease, StateError, StateStore};

fn encrypted(root: &std::path::Path, key: &EncryptionKey) -> EncryptedStore<FileStore> {
    EncryptedStore::new(FileStore::new(root), key.clone())
}

#[tokio::test]
async fn encrypted_file_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_key_file(dir.path().join("key")).unwrap();
    suite::run_all(&encrypted(&dir.path().join("store"), &key)).await;
    let raw = std::fs::read(dir.path().join("store/suite/rt/pki/ca.key")).unwrap();
    assert!(
        raw.starts_with(MAGIC) && !raw.windows(6).any(|w| w == b"secret"),
        "stored encrypted"
    );
}

#[tokio::test]
async fn encrypted_file_store_races_and_locks() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_key_file(dir.path().join("key")).unwrap();
    let store: Arc<dyn StateStore> = Arc::new(encrypted(&dir.path().join("store"), &key));
    suite::racing_creates(store.clone(), 16).await;
    let lease = |ttl| Lease {
        cluster: "c".into(),
        command: "update cluster c".into(),
        ttl,
    };
    let g = lease(Duration::from_secs(60))
        .acquire(store.clone())
        .await
        .unwrap();
    assert!(matches!(
        lease(Duration::from_secs(60)).acquire(store.clone()).await,
        Err(StateError::Locked { .. })
    ));
    g.release().await.unwrap();
}

#[tokio::test]
async fn secrets_on_disk_are_ciphertext_and_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_key_file(dir.path().join("key")).unwrap();
    let root = dir.path().join("store");
    let s = encrypted(&root, &key);
    let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let v = s
        .put("c/pki/ca.crt", pem, Condition::IfAbsent)
        .await
        .unwrap();
    let raw = std::fs::read(root.join("c/pki/ca.crt")).unwrap();
    assert!(!raw.windows(10).any(|w| w == b"-----BEGIN"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(root.join("c/pki/ca.crt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let o = s.get("c/pki/ca.crt").await.unwrap().unwrap();
    assert_eq!((o.bytes.as_slice(), o.version), (&pem[..], v));

    let other = generate_key_file(dir.path().join("other")).unwrap();
    match encrypted(&root, &other).get("c/pki/ca.crt").await {
        Err(StateError::Backend { location, message }) => {
            assert_eq!(location, "c/pki/ca.crt");
            assert!(
                message.contains("key file is wrong") && message.contains("other"),
                "{message}"
            );
        }
        r => panic!("expected a wrong-key error, got {r:?}"),
    }
}
