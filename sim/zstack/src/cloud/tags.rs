//! User and system tags: creation with ZStack's checks, deletion, and cleanup with their owner.

use super::{new_uuid, CloudState};
use crate::error::ErrorCode;
use crate::model::Tag;
use crate::time::GsonTime;
use regex::Regex;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::OnceLock;

impl CloudState {
    /// Stores a tag without checks (the callers validated it).
    pub(super) fn add_tag(
        &mut self,
        resource_uuid: &str,
        resource_type: &str,
        tag: &str,
        type_: &str,
    ) -> Tag {
        let t = Tag {
            uuid: new_uuid(),
            resource_uuid: resource_uuid.into(),
            resource_type: resource_type.into(),
            tag: tag.into(),
            type_: type_.into(),
            inherent: false,
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        };
        self.tags.push(t.clone());
        t
    }

    /// Stores a create call's user and system tags on the new resource (duplicates once).
    pub(super) fn add_create_tags(
        &mut self,
        uuid: &str,
        rtype: &str,
        user: &[String],
        system: &[String],
    ) {
        for (tags, type_) in [(user, "User"), (system, "System")] {
            let mut seen = HashSet::new();
            for t in tags {
                if seen.insert(t.clone()) {
                    self.add_tag(uuid, rtype, t, type_);
                }
            }
        }
    }

    /// `CreateUserTag` / `CreateSystemTag` (§7): validates, refuses duplicates (SYS.1006).
    pub fn create_tag(&mut self, params: &Value, type_: &str) -> Result<Value, ErrorCode> {
        let get = |k: &str| {
            params
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (rtype, ruuid, tag) = (get("resourceType"), get("resourceUuid"), get("tag"));
        if ruuid.is_empty() || tag.is_empty() || rtype.is_empty() {
            return Err(ErrorCode::invalid_argument(
                "resourceType, resourceUuid and tag are mandatory",
            ));
        }
        match self.resource_type_of(&ruuid) {
            Some(t) if t == rtype => {}
            Some(t) => {
                return Err(ErrorCode::invalid_argument(format!(
                    "resource[uuid:{ruuid}] is a {t}, not a {rtype}"
                )))
            }
            None => {
                return Err(ErrorCode::invalid_argument(format!(
                    "no resource[uuid:{ruuid}, type:{rtype}] found"
                )))
            }
        }
        if type_ == "System" {
            validate_system_tag_format(&tag)?;
        }
        if self
            .tags
            .iter()
            .any(|t| t.resource_uuid == ruuid && t.tag == tag && t.type_ == type_)
        {
            return Err(ErrorCode::operation(format!(
                "Duplicated Tag[tag:{tag}, type:{type_}, resourceType:{rtype}, resourceUuid:{ruuid}]"
            )));
        }
        let t = self.add_tag(&ruuid, &rtype, &tag, type_);
        Ok(json!({ "inventory": t }))
    }

    /// `DeleteTag`: deleting a missing tag succeeds.
    pub fn delete_tag(&mut self, uuid: &str) -> Value {
        self.tags.retain(|t| t.uuid != uuid);
        json!({})
    }

    /// Deletes the tags of resources that are going away.
    pub(super) fn drop_tags_of(&mut self, uuids: &HashSet<String>) {
        self.tags.retain(|t| !uuids.contains(&t.resource_uuid));
    }
}

/// System tags must look like `key::value`; the MN rejects tags no SystemTag pattern matches.
/// Unknown keys are accepted (the MN has hundreds of patterns), malformed ones are not.
pub(crate) fn validate_system_tag_format(t: &str) -> Result<(), ErrorCode> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new("^[A-Za-z][A-Za-z0-9_.-]*::.+").expect("static regex"));
    if re.is_match(t) {
        Ok(())
    } else {
        Err(ErrorCode::invalid_argument(format!(
            "no system tag matches [{t}]: system tags have the form key::value"
        )))
    }
}
