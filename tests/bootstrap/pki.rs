//! The cluster PKI and secrets against openssl and a real `file://` store.
//!
//! Needs `openssl` on PATH (installed by tests/peers/install.sh).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kprov::pki;
use kprov::repo::Repo;
use kprov::secrets::{self, keys, CaKind};
use kprov::spec::ClusterConfig;
use kprov_state::file::FileStore;
use kprov_state::{Condition, StateStore};

const SPEC: &str = r#"apiVersion: kprov.io/v1alpha1
kind: Cluster
metadata: {name: demo}
spec:
  provider: {zstack: {endpoint: "http://127.0.0.1:9"}}
  kubernetesVersion: 1.33.13
  controlPlane: {endpoint: "127.0.0.1", port: 6443}
  bootstrap: {tokenTTL: 2h}
---
apiVersion: kprov.io/v1alpha1
kind: InstanceGroup
metadata: {name: control-plane}
spec: {role: control-plane, count: 1, arch: amd64}
"#;

fn config() -> ClusterConfig {
    let docs = kprov::spec::load_documents("spec.yaml", SPEC).expect("spec parses");
    let (cluster, _) = docs.clusters.into_iter().next().expect("a cluster");
    ClusterConfig {
        cluster,
        groups: docs.groups.into_iter().map(|(g, _)| g).collect(),
    }
}

fn file_repo(dir: &Path) -> Repo {
    Repo::new(Arc::new(FileStore::new(dir)))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Run a shell pipeline in `dir`; fail the test with its stderr when it fails.
fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("sh runs (is openssl installed?)");
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

/// kubeadm's `[a-z0-9]{6}\.[a-z0-9]{16}`, written out.
fn matches_token_regex(s: &str) -> bool {
    let b = s.as_bytes();
    let class = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.len() == 23 && b[..6].iter().all(class) && b[6] == b'.' && b[7..].iter().all(class)
}

/// Every key under `demo/` with its version.
async fn versions(store: &dyn StateStore) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for k in store.list("demo/").await.unwrap() {
        out.insert(k.clone(), store.get(&k).await.unwrap().unwrap().version.0);
    }
    out
}

#[test]
fn discovery_hash_matches_the_kubeadm_openssl_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::new_ca("kubernetes").unwrap();
    write(dir.path(), "ca.crt", &ca.cert_pem);
    // The recipe from the kubeadm docs (RSA CA, so `openssl rsa`).
    let expected = sh(
        dir.path(),
        "openssl x509 -pubkey -in ca.crt | openssl rsa -pubin -outform der 2>/dev/null | openssl dgst -sha256 -hex | sed 's/^.* //'",
    );
    let expected = expected.trim();
    assert_eq!(expected.len(), 64, "openssl printed {expected:?}");
    assert_eq!(
        pki::discovery_hash(&ca.cert_pem).unwrap(),
        format!("sha256:{expected}")
    );
}

#[test]
fn cas_are_rsa_2048_with_ca_true_and_cert_sign() {
    let dir = tempfile::tempdir().unwrap();
    for cn in [pki::CLUSTER_CA_CN, pki::FRONT_PROXY_CA_CN, pki::ETCD_CA_CN] {
        let ca = pki::new_ca(cn).unwrap();
        write(dir.path(), "ca.crt", &ca.cert_pem);
        let text = sh(dir.path(), "openssl x509 -in ca.crt -noout -text");
        assert!(text.contains("CA:TRUE"), "{text}");
        assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
        assert!(text.contains("Digital Signature"), "{text}");
        assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
        assert!(text.contains("sha256WithRSAEncryption"), "{text}");
        assert!(text.contains(&format!("Subject: CN = {cn}")), "{text}");
        // 10 years: still valid in 9 years, not in 11.
        sh(
            dir.path(),
            &format!(
                "openssl x509 -in ca.crt -noout -checkend {}",
                9 * 365 * 86400
            ),
        );
        let expired = Command::new("openssl")
            .args([
                "x509",
                "-in",
                "ca.crt",
                "-noout",
                "-checkend",
                &(11 * 365 * 86400).to_string(),
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!expired.status.success());
        // The key is PKCS#8 and matches the certificate.
        write(dir.path(), "ca.key", &ca.key_pem);
        assert_eq!(
            sh(dir.path(), "openssl x509 -in ca.crt -noout -pubkey"),
            sh(dir.path(), "openssl pkey -in ca.key -pubout")
        );
    }
}

#[test]
fn client_cert_verifies_against_its_ca_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::new_ca("kubernetes").unwrap();
    let (cert, key) = pki::sign_client_cert(
        &ca,
        "kprov-admin",
        &["kubeadm:cluster-admins"],
        Duration::from_secs(7200),
    )
    .unwrap();
    write(dir.path(), "ca.crt", &ca.cert_pem);
    write(dir.path(), "client.crt", &cert);
    write(dir.path(), "client.key", &key);
    let out = sh(
        dir.path(),
        "openssl verify -CAfile ca.crt -purpose sslclient client.crt",
    );
    assert_eq!(out.trim(), "client.crt: OK");
    let subject = sh(dir.path(), "openssl x509 -in client.crt -noout -subject");
    assert_eq!(
        subject.trim(),
        "subject=O = kubeadm:cluster-admins, CN = kprov-admin"
    );
    let text = sh(dir.path(), "openssl x509 -in client.crt -noout -text");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert_eq!(
        sh(dir.path(), "openssl x509 -in client.crt -noout -pubkey"),
        sh(dir.path(), "openssl pkey -in client.key -pubout")
    );
    // A different CA does not verify it.
    let other = pki::new_ca("kubernetes").unwrap();
    write(dir.path(), "other.crt", &other.cert_pem);
    let bad = Command::new("openssl")
        .args(["verify", "-CAfile", "other.crt", "client.crt"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn bootstrap_token_has_kubeadm_format_and_ttl() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let t = pki::new_bootstrap_token(Duration::from_secs(86400)).unwrap();
        assert!(matches_token_regex(&t.token), "bad token format");
        assert!(pki::is_valid_token(&t.token));
        assert_eq!(t.id().len(), 6);
        assert!(seen.insert(t.token.clone()), "token repeated");
        assert!(!format!("{t:?}").contains(&t.token));
    }
    let k = pki::new_certificate_key().unwrap();
    assert_eq!(k.len(), 64);
    assert!(k
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
}

#[test]
fn ensure_creates_everything_once_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let repo = file_repo(dir.path());
    let cfg = config();
    rt().block_on(async {
        secrets::ensure(&repo, &cfg).await.unwrap();
        let first = versions(repo.store.as_ref()).await;
        let expected: Vec<String> = [
            "demo/pki/ca.crt",
            "demo/pki/ca.key",
            "demo/pki/etcd-ca.crt",
            "demo/pki/etcd-ca.key",
            "demo/pki/front-proxy-ca.crt",
            "demo/pki/front-proxy-ca.key",
            "demo/pki/sa.key",
            "demo/pki/sa.pub",
            "demo/secrets/bootstrap-token.json",
            "demo/secrets/certificate-key",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(first.keys().cloned().collect::<Vec<_>>(), expected);
        secrets::ensure(&repo, &cfg).await.unwrap();
        assert_eq!(
            versions(repo.store.as_ref()).await,
            first,
            "a second ensure changed objects"
        );

        let s = secrets::load(&repo, "demo").await.unwrap();
        assert_eq!(pki::common_name(&s.ca.cert_pem).unwrap(), "kubernetes");
        assert_eq!(
            pki::common_name(&s.front_proxy_ca.cert_pem).unwrap(),
            "front-proxy-ca"
        );
        assert_eq!(pki::common_name(&s.etcd_ca.cert_pem).unwrap(), "etcd-ca");
        for ca in [&s.ca, &s.front_proxy_ca, &s.etcd_ca] {
            pki::check_pair(ca).unwrap();
        }
        pki::check_public_key(&s.service_account).unwrap();
        assert!(s
            .service_account
            .cert_pem
            .starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(matches_token_regex(&s.token.token));
        // tokenTTL: 2h in the spec.
        let left = (s.token.expires - chrono::Utc::now()).num_seconds();
        assert!((7100..=7200).contains(&left), "{left}");
        assert_eq!(s.certificate_key.len(), 64);
        assert!(s.discovery_hash().unwrap().starts_with("sha256:"));
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("PRIVATE KEY")
                && !debug.contains(&s.token.token)
                && !debug.contains(&s.certificate_key)
        );
    });
}

#[test]
fn racing_ensure_calls_produce_one_ca() {
    let dir = tempfile::tempdir().unwrap();
    let racers = 4;
    let barrier = Arc::new(std::sync::Barrier::new(racers));
    let handles: Vec<_> = (0..racers)
        .map(|_| {
            let root = dir.path().to_path_buf();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // Each racer has its own store handle and runtime, like separate kprov processes.
                let repo = file_repo(&root);
                let cfg = config();
                barrier.wait();
                rt().block_on(async {
                    secrets::ensure(&repo, &cfg).await.unwrap();
                    secrets::load(&repo, "demo").await.unwrap()
                })
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("racer panicked"))
        .collect();
    let repo = file_repo(dir.path());
    let stored = rt().block_on(secrets::load(&repo, "demo")).unwrap();
    for r in &results {
        assert_eq!(
            r.ca.cert_pem, stored.ca.cert_pem,
            "racers saw different CAs"
        );
        assert_eq!(r.ca.key_pem, stored.ca.key_pem);
        assert_eq!(r.etcd_ca.key_pem, stored.etcd_ca.key_pem);
        assert_eq!(r.front_proxy_ca.key_pem, stored.front_proxy_ca.key_pem);
        assert_eq!(r.service_account.key_pem, stored.service_account.key_pem);
        assert_eq!(r.token.token, stored.token.token);
        assert_eq!(r.certificate_key, stored.certificate_key);
    }
    for ca in [&stored.ca, &stored.front_proxy_ca, &stored.etcd_ca] {
        pki::check_pair(ca).unwrap();
    }
    // Nothing but the ten objects (no leftovers of the losers).
    let keys = rt().block_on(repo.store.list("demo/")).unwrap();
    assert_eq!(keys.len(), 10, "{keys:?}");
}

#[test]
fn secret_files_are_owner_only_in_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let repo = file_repo(dir.path());
    rt().block_on(secrets::ensure(&repo, &config())).unwrap();
    let mut n = 0;
    for sub in ["demo/pki", "demo/secrets"] {
        for entry in std::fs::read_dir(dir.path().join(sub)).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} has mode {mode:o}", entry.path().display());
            n += 1;
        }
    }
    assert_eq!(n, 10);
}

#[test]
fn missing_secrets_are_named_and_existing_cas_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let repo = file_repo(dir.path());
    let cfg = config();
    rt().block_on(async {
        secrets::ensure(&repo, &cfg).await.unwrap();
        let before = secrets::load(&repo, "demo").await.unwrap();
        let store = repo.store.as_ref();

        // A lost certificate is re-derived from the stored key: same key, same discovery hash.
        store
            .delete(&keys::ca_cert("demo", CaKind::Cluster), Condition::None)
            .await
            .unwrap();
        let err = secrets::load(&repo, "demo").await.unwrap_err().to_string();
        assert!(
            err.contains("demo/pki/ca.crt") && err.contains("--replace"),
            "{err}"
        );
        secrets::ensure(&repo, &cfg).await.unwrap();
        let after = secrets::load(&repo, "demo").await.unwrap();
        assert_eq!(after.ca.key_pem, before.ca.key_pem);
        assert_eq!(
            after.discovery_hash().unwrap(),
            before.discovery_hash().unwrap()
        );

        // A lost CA key is not regenerated: ensure refuses and says why.
        store
            .delete(&keys::ca_key("demo", CaKind::Etcd), Condition::None)
            .await
            .unwrap();
        let err = format!("{:#}", secrets::ensure(&repo, &cfg).await.unwrap_err());
        assert!(
            err.contains("demo/pki/etcd-ca.key") && err.contains("never replaces"),
            "{err}"
        );
        assert!(store
            .get(&keys::ca_key("demo", CaKind::Etcd))
            .await
            .unwrap()
            .is_none());
        let err = secrets::load(&repo, "demo").await.unwrap_err().to_string();
        assert!(err.contains("demo/pki/etcd-ca.key"), "{err}");
        assert!(!err.contains("PRIVATE KEY"));

        // A lost sa.pub is restored from sa.key.
        store
            .delete(&keys::sa_pub("demo"), Condition::None)
            .await
            .unwrap();
        store
            .put(
                &keys::ca_key("demo", CaKind::Etcd),
                before.etcd_ca.key_pem.as_bytes(),
                Condition::IfAbsent,
            )
            .await
            .unwrap();
        secrets::ensure(&repo, &cfg).await.unwrap();
        assert_eq!(
            secrets::load(&repo, "demo")
                .await
                .unwrap()
                .service_account
                .cert_pem,
            before.service_account.cert_pem
        );
    });
}

#[test]
fn refresh_token_replaces_only_tokens_past_half_their_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let repo = file_repo(dir.path());
    let day = Duration::from_secs(86400);
    rt().block_on(async {
        secrets::ensure(&repo, &config()).await.unwrap();
        let store = repo.store.as_ref();
        let key = keys::bootstrap_token("demo");
        // The stored token (2h TTL) has less than 12h left: replaced by a 24h one.
        let old = secrets::load(&repo, "demo").await.unwrap().token;
        let fresh = secrets::refresh_token(&repo, "demo", day).await.unwrap();
        assert_ne!(fresh.token, old.token);
        assert!(matches_token_regex(&fresh.token));
        let left = (fresh.expires - chrono::Utc::now()).num_seconds();
        assert!((86300..=86400).contains(&left), "{left}");
        assert_eq!(
            secrets::load(&repo, "demo").await.unwrap().token.token,
            fresh.token
        );
        // Now it has more than half left: kept, object untouched.
        let version = store.get(&key).await.unwrap().unwrap().version;
        let again = secrets::refresh_token(&repo, "demo", day).await.unwrap();
        assert_eq!(again.token, fresh.token);
        assert_eq!(store.get(&key).await.unwrap().unwrap().version, version);
        // Missing altogether: created.
        store.delete(&key, Condition::None).await.unwrap();
        let created = secrets::refresh_token(&repo, "demo", Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(
            secrets::load(&repo, "demo").await.unwrap().token.token,
            created.token
        );
    });
}

#[test]
fn concurrent_refreshes_agree_on_one_token() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(secrets::ensure(&file_repo(dir.path()), &config()))
        .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let root = dir.path().to_path_buf();
            std::thread::spawn(move || {
                rt().block_on(secrets::refresh_token(
                    &file_repo(&root),
                    "demo",
                    Duration::from_secs(86400),
                ))
                .unwrap()
                .token
            })
        })
        .collect();
    let tokens: std::collections::HashSet<String> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        tokens.len(),
        1,
        "racing refreshes returned different tokens"
    );
    let stored = rt()
        .block_on(secrets::load(&file_repo(dir.path()), "demo"))
        .unwrap();
    assert!(tokens.contains(&stored.token.token));
}

/// A store where another run wins every create: just before each `IfAbsent` write, the object
/// the "winner" (a second store) holds appears under the same key.
struct LosingStore {
    inner: FileStore,
    winner: FileStore,
}

#[async_trait::async_trait]
impl StateStore for LosingStore {
    fn url(&self) -> String {
        self.inner.url()
    }
    async fn get(&self, key: &str) -> kprov_state::StateResult<Option<kprov_state::Object>> {
        self.inner.get(key).await
    }
    async fn put(
        &self,
        key: &str,
        bytes: &[u8],
        cond: Condition,
    ) -> kprov_state::StateResult<kprov_state::Version> {
        if cond == Condition::IfAbsent {
            if let Some(w) = self.winner.get(key).await? {
                self.inner.put(key, &w.bytes, Condition::IfAbsent).await?;
            }
        }
        self.inner.put(key, bytes, cond).await
    }
    async fn list(&self, prefix: &str) -> kprov_state::StateResult<Vec<String>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str, cond: Condition) -> kprov_state::StateResult<()> {
        self.inner.delete(key, cond).await
    }
}

#[test]
fn losing_every_race_adopts_the_winners_objects() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let winner = file_repo(theirs.path());
        secrets::ensure(&winner, &config()).await.unwrap();
        let repo = Repo::new(Arc::new(LosingStore {
            inner: FileStore::new(ours.path()),
            winner: FileStore::new(theirs.path()),
        }));
        secrets::ensure(&repo, &config()).await.unwrap();
        let a = versions(&FileStore::new(ours.path())).await;
        let b = versions(&FileStore::new(theirs.path())).await;
        assert_eq!(a, b, "the loser stored objects of its own");
    });
}
