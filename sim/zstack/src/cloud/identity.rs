//! Accounts, AccessKeys and sessions: login, session checks, renewal and logout.

use super::{new_uuid, CloudState};
use crate::error::ErrorCode;
use crate::model::SessionView;
use crate::time::GsonTime;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `identity/session.maxConcurrent`.
const MAX_SESSIONS_PER_ACCOUNT: usize = 500;
/// The well-known uuid of ZStack's built-in admin account.
pub(crate) const ADMIN_ACCOUNT_UUID: &str = "36c27e8ff05c4780bf6d2fa65700f22e";

/// A login account; the password is kept as the SHA-512 hex clients send.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Account {
    /// Owner of the sessions and AccessKeys that act as this account.
    pub uuid: String,
    /// The login name (`accountName`).
    pub name: String,
    /// Compared with the `password` a login sends, which is already hashed.
    pub password_sha512: String,
}

/// An AccessKey pair: `Authorization: ZStack <id>:<signature>` requests act as its account.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct AccessKey {
    /// The id the header names.
    pub access_key_id: String,
    /// The HMAC-SHA1 key the signature is checked with.
    pub access_key_secret: String,
    /// The account its requests act as.
    pub account_uuid: String,
}

/// A session. Expiry is computed from `renewed_at` and the TTL in force, so a TTL override
/// applies to sessions that already exist.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Session {
    /// The token clients send as `Authorization: OAuth <uuid>`.
    pub uuid: String,
    /// The account logged in.
    pub account_uuid: String,
    /// Login time (the inventory's `createDate`).
    pub created_at: DateTime<Utc>,
    /// Login or latest renewal: the lifetime counts from here.
    pub renewed_at: DateTime<Utc>,
    /// Set by `renewSession {duration}`; otherwise the global TTL applies.
    pub duration_secs: Option<u64>,
}

impl Session {
    /// Last renewal plus the session's own duration, or `ttl_secs` when it has none.
    pub fn expires_at(&self, ttl_secs: u64) -> DateTime<Utc> {
        let secs = self.duration_secs.unwrap_or(ttl_secs);
        self.renewed_at + chrono::Duration::seconds(secs.min(i64::MAX as u64 / 1000) as i64)
    }
}

impl CloudState {
    /// `logInByAccount`: `password` is the SHA-512 hex the client computed.
    pub fn login(
        &mut self,
        name: &str,
        password: &str,
        ttl: u64,
    ) -> Result<SessionView, ErrorCode> {
        let now = Utc::now();
        self.sessions.retain(|s| s.expires_at(ttl) > now);
        let acct = self
            .accounts
            .iter()
            .find(|a| a.name == name && a.password_sha512 == password)
            .ok_or_else(|| ErrorCode::new("ID.1000", "wrong account or username or password"))?
            .clone();
        let live = self
            .sessions
            .iter()
            .filter(|s| s.account_uuid == acct.uuid)
            .count();
        if live >= MAX_SESSIONS_PER_ACCOUNT {
            return Err(ErrorCode::new(
                "ID.1006",
                format!("account[{name}] has reached the maximum of {MAX_SESSIONS_PER_ACCOUNT} concurrent sessions"),
            ));
        }
        let s = Session {
            uuid: new_uuid(),
            account_uuid: acct.uuid,
            created_at: now,
            renewed_at: now,
            duration_secs: None,
        };
        let view = session_view(&s, ttl);
        self.sessions.push(s);
        Ok(view)
    }

    /// The account of a live session.
    pub fn session_account(&self, uuid: &str, ttl: u64) -> Option<String> {
        let now = Utc::now();
        self.sessions
            .iter()
            .find(|s| s.uuid == uuid && s.expires_at(ttl) > now)
            .map(|s| s.account_uuid.clone())
    }

    /// Logout; unknown sessions are fine (logout is idempotent on the MN).
    pub fn logout(&mut self, uuid: &str) {
        self.sessions.retain(|s| s.uuid != uuid);
    }

    /// `renewSession`: restarts the session's lifetime (optionally with a new duration).
    pub fn renew(
        &mut self,
        uuid: &str,
        duration: Option<u64>,
        ttl: u64,
    ) -> Result<Value, ErrorCode> {
        let now = Utc::now();
        let s = self
            .sessions
            .iter_mut()
            .find(|s| s.uuid == uuid && s.expires_at(ttl) > now)
            .ok_or_else(ErrorCode::session_expired)?;
        s.renewed_at = now;
        if duration.is_some() {
            s.duration_secs = duration;
        }
        let v = session_view(s, ttl);
        Ok(json!({ "inventory": v }))
    }

    /// The AccessKey secret and account for an id.
    pub fn access_key(&self, id: &str) -> Option<(String, String)> {
        self.access_keys
            .iter()
            .find(|k| k.access_key_id == id)
            .map(|k| (k.access_key_secret.clone(), k.account_uuid.clone()))
    }
}

/// The session as `logInByAccount` / `renewSession` return it.
fn session_view(s: &Session, ttl: u64) -> SessionView {
    SessionView {
        uuid: s.uuid.clone(),
        account_uuid: s.account_uuid.clone(),
        user_uuid: s.account_uuid.clone(),
        user_type: "AccountVO".into(),
        expired_date: GsonTime(s.expires_at(ttl)),
        create_date: GsonTime(s.created_at),
    }
}
