//! Fitting user-data into a provider's size limit: gzip when it is over, refuse when even that
//! is too large, and read it back either way.

use std::io::{Read, Write};

use kprov_providers::{InstanceRequest, Role};

use super::BootstrapError;

pub(super) fn gzip(bytes: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    enc.finish()
}

/// Gzip `text` when it exceeds `limit`; fail when even that does not fit.
pub fn fit_user_data(
    text: &str,
    limit: Option<usize>,
    provider: &str,
    req: &InstanceRequest,
) -> Result<Vec<u8>, BootstrapError> {
    let raw = text.as_bytes();
    let Some(limit) = limit else {
        return Ok(raw.to_vec());
    };
    if raw.len() <= limit {
        return Ok(raw.to_vec());
    }
    let gz = gzip(raw)?;
    if gz.len() <= limit {
        return Ok(gz);
    }
    let fix = if req.role == Role::ControlPlane {
        "the first control plane carries the CA keys and every CNI/add-on manifest: choose flannel instead of calico or fewer add-ons, or create the cluster on a provider without this limit".to_string()
    } else {
        "this is unexpected for a node without manifests; report it with `kprov get userdata`"
            .to_string()
    };
    Err(BootstrapError::TooLarge {
        instance: req.name.clone(),
        instance_group: req.instance_group.clone(),
        provider: provider.into(),
        raw: raw.len(),
        gzip: gz.len(),
        limit,
        fix,
    })
}

/// The user-data as text: gunzips it when it is gzip-compressed.
pub fn decompress_user_data(bytes: &[u8]) -> Result<String, BootstrapError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::GzDecoder::new(bytes).read_to_string(&mut s)?;
        Ok(s)
    } else {
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}
