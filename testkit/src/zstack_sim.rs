//! The ZStack simulator for tests: started in-process on a free port ([`Target::start_sim`]),
//! or a real management node named by `KPROV_ZSTACK_ENDPOINT` ([`Target::from_env_or_sim`]);
//! and a tiny ZStack REST client, written against the documented wire protocol only (so the
//! simulator's conformance tests can run against a real management node as well).

use kprov_zstack_sim::{SimConfig, SimHandle, Simulator};
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha512};
use std::time::{Duration, Instant};

/// A reply: status, parsed body (JSON, or the raw text as a JSON string) and raw text.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub json: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

/// The outcome of an async call after polling.
#[derive(Debug, Clone)]
pub struct JobReply {
    pub submit: Reply,
    pub job_id: String,
    pub saw_running: bool,
    pub done: Reply,
}

pub struct Target {
    pub endpoint: String,
    pub account: String,
    pub password: String,
    pub sim: Option<SimHandle>,
    pub client: reqwest::Client,
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

pub fn sha512_hex(s: &str) -> String {
    hex::encode(Sha512::digest(s.as_bytes()))
}

pub fn random_hex32() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Target {
    /// The endpoint from `KPROV_ZSTACK_ENDPOINT` (+ account/password), else an in-process sim.
    pub async fn from_env_or_sim(cfg: SimConfig) -> Target {
        match std::env::var("KPROV_ZSTACK_ENDPOINT") {
            Ok(e) if !e.is_empty() => Target {
                endpoint: e.trim_end_matches('/').to_string(),
                account: std::env::var("KPROV_ZSTACK_ACCOUNT").unwrap_or_else(|_| "admin".into()),
                password: std::env::var("KPROV_ZSTACK_PASSWORD")
                    .unwrap_or_else(|_| "password".into()),
                sim: None,
                client: client(),
            },
            _ => Target::start_sim(cfg).await,
        }
    }

    pub async fn start_sim(cfg: SimConfig) -> Target {
        let (account, password) = cfg.admin_account.clone();
        let sim = Simulator::start(cfg).await.expect("simulator starts");
        Target {
            endpoint: sim.endpoint(),
            account,
            password,
            sim: Some(sim),
            client: client(),
        }
    }

    pub fn in_process(&self) -> bool {
        self.sim.is_some()
    }

    pub fn sim(&self) -> &SimHandle {
        self.sim.as_ref().expect("in-process simulator")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/zstack/v1{}", self.endpoint, path)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        session: Option<&str>,
        query: &[(&str, &str)],
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Result<Reply, reqwest::Error> {
        let mut rb = self.client.request(method, self.url(path)).query(query);
        if let Some(s) = session {
            rb = rb.header("Authorization", format!("OAuth {s}"));
        }
        for (k, v) in extra {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/json; charset=utf-8")
                .body(b.to_string());
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        Ok(Reply {
            status,
            json,
            text,
            headers,
        })
    }

    pub async fn req(
        &self,
        method: Method,
        path: &str,
        session: Option<&str>,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        self.send(method, path, session, query, body, &[])
            .await
            .expect("HTTP exchange")
    }

    pub async fn get(&self, path: &str, session: &str, query: &[(&str, &str)]) -> Reply {
        self.req(Method::GET, path, Some(session), query, None)
            .await
    }

    pub async fn login(&self) -> String {
        let body = serde_json::json!({"logInByAccount": {"accountName": self.account, "password": sha512_hex(&self.password)}});
        let r = self
            .req(Method::PUT, "/accounts/login", None, &[], Some(&body))
            .await;
        assert_eq!(r.status, 200, "login failed: {}", r.text);
        r.json["inventory"]["uuid"]
            .as_str()
            .expect("session uuid")
            .to_string()
    }

    /// Polls a job `location` (rewritten onto our endpoint, as the SDKs do) until it is done.
    pub async fn poll(&self, location: &str) -> (Reply, bool) {
        let id = location
            .rsplit_once("/zstack/v1/api-jobs/")
            .map(|(_, id)| id.to_string())
            .unwrap_or_else(|| panic!("unexpected location {location}"));
        self.poll_id(&id, Duration::from_secs(600)).await
    }

    pub async fn poll_id(&self, id: &str, limit: Duration) -> (Reply, bool) {
        let deadline = Instant::now() + limit;
        let mut saw_running = false;
        let mut wait = Duration::from_millis(20);
        loop {
            let r = self
                .req(Method::GET, &format!("/api-jobs/{id}"), None, &[], None)
                .await;
            if r.status != 202 {
                return (r, saw_running);
            }
            assert_eq!(
                r.json,
                serde_json::json!({}),
                "a running job answers 202 {{}}"
            );
            saw_running = true;
            assert!(Instant::now() < deadline, "job {id} did not finish in time");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(if self.in_process() {
                100
            } else {
                2000
            }));
        }
    }

    /// Submits an async call, checks the 202 envelope and polls to completion.
    pub async fn job(
        &self,
        method: Method,
        path: &str,
        session: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> JobReply {
        let submit = self.req(method, path, Some(session), query, body).await;
        assert_eq!(
            submit.status, 202,
            "async call {path} answered {}: {}",
            submit.status, submit.text
        );
        let location = submit.json["location"]
            .as_str()
            .expect("location")
            .to_string();
        assert!(
            submit.json["apiTimeout"].as_u64().is_some(),
            "apiTimeout: {}",
            submit.text
        );
        let job_id = location.rsplit('/').next().unwrap_or_default().to_string();
        let (done, saw_running) = self.poll(&location).await;
        JobReply {
            submit,
            job_id,
            saw_running,
            done,
        }
    }

    /// Query helper: the `inventories` array.
    pub async fn list(&self, path: &str, session: &str, q: &[&str]) -> Vec<Value> {
        let query: Vec<(&str, &str)> = q.iter().map(|c| ("q", *c)).collect();
        let r = self.get(path, session, &query).await;
        assert_eq!(r.status, 200, "query {path} {q:?}: {}", r.text);
        r.json["inventories"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn vm(&self, session: &str, uuid: &str) -> Option<Value> {
        let r = self
            .get(&format!("/vm-instances/{uuid}"), session, &[])
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["inventories"]
            .as_array()
            .and_then(|a| a.first().cloned())
    }

    pub async fn action(&self, session: &str, vm: &str, body: Value) -> JobReply {
        self.job(
            Method::PUT,
            &format!("/vm-instances/{vm}/actions"),
            session,
            &[],
            Some(&body),
        )
        .await
    }

    /// Destroy + expunge, ignoring failures (cleanup on a real cloud).
    pub async fn cleanup_vm(&self, session: &str, vm: &str) {
        let _ = self
            .job(
                Method::DELETE,
                &format!("/vm-instances/{vm}"),
                session,
                &[],
                None,
            )
            .await;
        let _ = self
            .action(session, vm, serde_json::json!({"expungeVmInstance": {}}))
            .await;
    }
}

/// What a VM can be created from on the target, discovered through the API.
#[derive(Debug, Clone)]
pub struct Fixtures {
    pub image: String,
    pub image_arch: String,
    pub offering: String,
    pub l3: String,
}

pub async fn discover(t: &Target, session: &str, arch: Option<&str>) -> Fixtures {
    let hosts = t
        .list("/hosts", session, &["state=Enabled", "status=Connected"])
        .await;
    let arches: Vec<String> = hosts
        .iter()
        .filter_map(|h| h["architecture"].as_str().map(str::to_string))
        .collect();
    let images = t
        .list(
            "/images",
            session,
            &[
                "status=Ready",
                "state=Enabled",
                "mediaType=RootVolumeTemplate",
            ],
        )
        .await;
    let image = images
        .iter()
        .find(|i| {
            let a = i["architecture"].as_str().unwrap_or("x86_64");
            match arch {
                Some(want) => a == want,
                None => arches.iter().any(|x| x == a),
            }
        })
        .expect("a Ready image matching a host architecture");
    let offerings = t
        .get(
            "/instance-offerings",
            session,
            &[
                ("q", "state=Enabled"),
                ("sort", "+memorySize"),
                ("limit", "1"),
            ],
        )
        .await;
    let offering = offerings.json["inventories"][0]["uuid"]
        .as_str()
        .expect("an offering")
        .to_string();
    let l3s = t
        .list(
            "/l3-networks",
            session,
            &["networkServices.networkServiceType=DHCP", "system=false"],
        )
        .await;
    Fixtures {
        image: image["uuid"].as_str().unwrap().to_string(),
        image_arch: image["architecture"]
            .as_str()
            .unwrap_or("x86_64")
            .to_string(),
        offering,
        l3: l3s.first().expect("an L3 with DHCP")["uuid"]
            .as_str()
            .unwrap()
            .to_string(),
    }
}

/// A `CreateVmInstance` body.
pub fn create_body(
    fx: &Fixtures,
    name: &str,
    strategy: &str,
    resource_uuid: Option<&str>,
) -> Value {
    let mut params = serde_json::json!({
        "name": name,
        "instanceOfferingUuid": fx.offering,
        "imageUuid": fx.image,
        "l3NetworkUuids": [fx.l3],
        "strategy": strategy,
    });
    if let Some(r) = resource_uuid {
        params["resourceUuid"] = Value::String(r.into());
    }
    serde_json::json!({ "params": params })
}
