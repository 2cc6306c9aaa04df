//! User and system tags attached to resources.

use crate::time::GsonTime;
use serde::{Deserialize, Serialize};

/// `SystemTagInventory` / `UserTagInventory` (`sdk/TagInventory.java`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Tag {
    /// 32-hex uuid.
    pub uuid: String,
    /// Tagged resource.
    pub resource_uuid: String,
    /// e.g. `VmInstanceVO`.
    pub resource_type: String,
    /// The tag string, e.g. `kprov::cluster::demo` or `hostname::node-1`.
    pub tag: String,
    /// `User` / `System`.
    #[serde(rename = "type")]
    pub type_: String,
    /// System tags only: created by the system itself.
    pub inherent: bool,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for Tag {
    fn default() -> Self {
        Tag {
            uuid: String::new(),
            resource_uuid: String::new(),
            resource_type: String::new(),
            tag: String::new(),
            type_: "User".into(),
            inherent: false,
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}
