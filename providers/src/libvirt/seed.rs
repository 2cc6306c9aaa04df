//! The NoCloud seed: an ISO 9660 image with volume label `cidata` holding `user-data` and
//! `meta-data`, written in-process with the `hadris-iso` crate (Rock Ridge + Joliet names, like
//! `cloud-localds`/`genisoimage -joliet -rock` make), so kprov needs no external ISO tool.

use std::io::Cursor;
use std::sync::Arc;

use hadris_iso::read::PathSeparator;
use hadris_iso::write::options::{CreationFeatures, FormatOptions};
use hadris_iso::write::{File as IsoFile, InputFiles, IsoImageWriter};

/// The volume label cloud-init's NoCloud datasource looks for.
pub const SEED_LABEL: &str = "cidata";

/// The `meta-data` document of a node: its instance id (a new id makes cloud-init run again)
/// and hostname.
pub fn meta_data(instance_id: &str, hostname: &str) -> String {
    format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n")
}

/// Build the seed ISO bytes from `user-data` and `meta-data`.
pub fn build_seed_iso(user_data: &[u8], meta_data: &str) -> std::io::Result<Vec<u8>> {
    let files = InputFiles {
        path_separator: PathSeparator::ForwardSlash,
        files: vec![
            IsoFile::File {
                name: Arc::new("meta-data".to_string()),
                contents: meta_data.as_bytes().to_vec(),
            },
            IsoFile::File {
                name: Arc::new("user-data".to_string()),
                contents: user_data.to_vec(),
            },
        ],
    };
    let opts = FormatOptions {
        volume_name: SEED_LABEL.to_string(),
        system_id: None,
        volume_set_id: None,
        publisher_id: None,
        preparer_id: None,
        application_id: Some("KPROV".to_string()),
        sector_size: 2048,
        path_separator: PathSeparator::ForwardSlash,
        features: CreationFeatures::with_extensions(),
        strict_charset: false,
    };
    // The writer needs the whole image area to exist (it reads back what it wrote): allocate
    // generously, then cut to the volume space size the primary volume descriptor records.
    let room = 1024 * 1024 + 2 * (user_data.len() + meta_data.len());
    let mut buf = Cursor::new(vec![0u8; room.next_multiple_of(2048)]);
    IsoImageWriter::format_new(&mut buf, files, opts).map_err(std::io::Error::other)?;
    let mut bytes = buf.into_inner();
    let pvd = 16 * 2048;
    let sectors =
        u32::from_le_bytes(bytes[pvd + 80..pvd + 84].try_into().expect("4 bytes")) as usize;
    if sectors > 0 && sectors * 2048 <= bytes.len() {
        bytes.truncate(sectors * 2048);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_has_the_cidata_label_and_both_files() {
        let iso = build_seed_iso(b"#cloud-config\nhostname: x\n", &meta_data("i-1", "x")).unwrap();
        assert_eq!(iso.len() % 2048, 0);
        // primary volume descriptor at sector 16: type 1, "CD001", volume id at offset 40
        let pvd = &iso[16 * 2048..17 * 2048];
        assert_eq!(pvd[0], 1);
        assert_eq!(&pvd[1..6], b"CD001");
        assert_eq!(std::str::from_utf8(&pvd[40..46]).unwrap(), "cidata");
        let hay = String::from_utf8_lossy(&iso);
        assert!(hay.contains("#cloud-config\nhostname: x"));
        assert!(hay.contains("instance-id: i-1"));
    }
}
