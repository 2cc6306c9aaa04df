//! The session record a login returns.

use crate::time::GsonTime;
use serde::{Deserialize, Serialize};

/// `SessionInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SessionView {
    /// The session id used in `Authorization: OAuth <uuid>`.
    pub uuid: String,
    /// The account logged in: calls made with the session act as it.
    pub account_uuid: String,
    /// User (the account itself for account logins).
    pub user_uuid: String,
    /// `AccountVO` for account logins (unconfirmed value).
    pub user_type: String,
    /// When the session expires: last renewal plus its duration, or the session TTL in force.
    pub expired_date: GsonTime,
    /// When the login happened (renewals do not change it).
    pub create_date: GsonTime,
}

impl Default for SessionView {
    fn default() -> Self {
        SessionView {
            uuid: String::new(),
            account_uuid: String::new(),
            user_uuid: String::new(),
            user_type: "AccountVO".into(),
            expired_date: GsonTime::now(),
            create_date: GsonTime::now(),
        }
    }
}
