//! Images: `AddImage` (a simulated download), deletion, expunge and recovery.

use super::tags::validate_system_tag_format;
use super::{arg_not_found, is_zstack_uuid, new_uuid, CloudState};
use crate::error::ErrorCode;
use crate::model::*;
use crate::time::GsonTime;
use serde::Deserialize;
use serde_json::{json, Value};

/// Parsed `params` of `AddImage`; the fields are the API's parameters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct AddImageParams {
    pub name: Option<String>,
    pub description: Option<String>,
    pub url: Option<String>,
    pub media_type: Option<String>,
    pub guest_os_type: Option<String>,
    pub system: Option<bool>,
    pub format: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub backup_storage_uuids: Vec<String>,
    pub resource_uuid: Option<String>,
    pub system_tags: Vec<String>,
    pub user_tags: Vec<String>,
}

impl CloudState {
    /// `AddImage`: inserts the image as Downloading (the simulator never downloads the URL).
    pub fn add_image_begin(&mut self, p: &AddImageParams) -> Result<String, ErrorCode> {
        if let Some(r) = &p.resource_uuid {
            if !is_zstack_uuid(r) {
                return Err(ErrorCode::invalid_argument(format!(
                    "resourceUuid[{r}] is not a valid uuid"
                )));
            }
        }
        let name = p.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(ErrorCode::invalid_argument("field[name] is mandatory"));
        }
        let url = p.url.clone().unwrap_or_default();
        let ok_scheme = [
            "http://",
            "https://",
            "file:///",
            "ftp://",
            "sftp://",
            "upload://",
            "zstore://",
        ]
        .iter()
        .any(|s| url.starts_with(s));
        if !ok_scheme {
            return Err(ErrorCode::invalid_argument(format!(
                "url[{url}] is not a supported image url"
            )));
        }
        if p.backup_storage_uuids.is_empty() {
            return Err(ErrorCode::invalid_argument(
                "field[backupStorageUuids] must not be empty",
            ));
        }
        for b in &p.backup_storage_uuids {
            if !self.backup_storages.iter().any(|x| &x.uuid == b) {
                return Err(arg_not_found("backupStorageUuids", b, "BackupStorageVO"));
            }
        }
        let media = p
            .media_type
            .clone()
            .unwrap_or_else(|| "RootVolumeTemplate".into());
        if !matches!(
            media.as_str(),
            "RootVolumeTemplate" | "ISO" | "DataVolumeTemplate"
        ) {
            return Err(ErrorCode::invalid_argument(format!(
                "mediaType[{media}] is invalid"
            )));
        }
        let format = p.format.clone().unwrap_or_else(|| {
            if media == "ISO" {
                "iso".into()
            } else {
                "qcow2".into()
            }
        });
        if !matches!(format.as_str(), "qcow2" | "raw" | "iso" | "vmtx" | "vhd") {
            return Err(ErrorCode::invalid_argument(format!(
                "format[{format}] is invalid"
            )));
        }
        for t in &p.system_tags {
            validate_system_tag_format(t)?;
        }
        let uuid = p.resource_uuid.clone().unwrap_or_else(new_uuid);
        if self.uuid_exists(&uuid) {
            return Err(ErrorCode::internal(format!(
                "could not persist ImageVO: a resource with uuid[{uuid}] already exists"
            )));
        }
        let img = Image {
            uuid: uuid.clone(),
            name,
            description: p.description.clone(),
            status: "Downloading".into(),
            size: 0,
            actual_size: 0,
            url: Some(url),
            media_type: media,
            guest_os_type: p.guest_os_type.clone(),
            platform: p.platform.clone().unwrap_or_else(|| "Linux".into()),
            architecture: p.architecture.clone().unwrap_or_else(|| "x86_64".into()),
            format,
            system: p.system.unwrap_or(false),
            backup_storage_refs: p
                .backup_storage_uuids
                .iter()
                .map(|b| ImageBackupStorageRef {
                    image_uuid: uuid.clone(),
                    backup_storage_uuid: b.clone(),
                    install_path: format!("zstore://{uuid}"),
                    status: "Downloading".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        self.images.push(img);
        for t in &p.user_tags {
            self.add_tag(&uuid, "ImageVO", t, "User");
        }
        for t in &p.system_tags {
            self.add_tag(&uuid, "ImageVO", t, "System");
        }
        Ok(uuid)
    }

    /// The "download" completes: Ready, with the sizes the seeded Ubuntu images have.
    pub fn add_image_finish(&mut self, uuid: &str) -> Result<Value, ErrorCode> {
        let img = self
            .images
            .iter_mut()
            .find(|i| i.uuid == uuid)
            .ok_or_else(|| {
                ErrorCode::new(
                    "SYS.1002",
                    format!("image[uuid:{uuid}] vanished while downloading"),
                )
            })?;
        img.status = "Ready".into();
        img.size = 2_361_393_152;
        img.actual_size = 658_505_728;
        for r in &mut img.backup_storage_refs {
            r.status = "Ready".into();
        }
        img.last_op_date = GsonTime::now();
        Ok(json!({ "inventory": img }))
    }

    /// A failed download removes the record (§9).
    pub fn add_image_abort(&mut self, uuid: &str) {
        self.images.retain(|i| i.uuid != uuid);
        self.tags.retain(|t| t.resource_uuid != uuid);
    }

    /// `DeleteImage` (Delay policy): status Deleted; missing image succeeds.
    pub fn delete_image(&mut self, uuid: &str) -> Value {
        if let Some(i) = self.images.iter_mut().find(|i| i.uuid == uuid) {
            i.status = "Deleted".into();
            i.last_op_date = GsonTime::now();
        }
        json!({})
    }

    /// `expungeImage` / `recoverImage`.
    pub fn image_action(&mut self, uuid: &str, action: &str) -> Result<Value, ErrorCode> {
        let img = self
            .images
            .iter_mut()
            .find(|i| i.uuid == uuid)
            .ok_or_else(|| arg_not_found("imageUuid", uuid, "ImageVO"))?;
        if img.status != "Deleted" {
            return Err(ErrorCode::operation(format!(
                "image[uuid:{uuid}] is not Deleted (status {}), cannot {action}",
                img.status
            )));
        }
        if action == "expungeImage" {
            self.add_image_abort(uuid);
            Ok(json!({}))
        } else {
            img.status = "Ready".into();
            img.last_op_date = GsonTime::now();
            Ok(json!({ "inventory": img }))
        }
    }
}
