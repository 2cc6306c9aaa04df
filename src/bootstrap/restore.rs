//! Restoring etcd on the replacement of a cluster's only control plane (`rolling-update
//! --allow-control-plane-downtime`): the snapshot is too large for user-data (AWS caps it at
//! 16 KiB), so the node fetches an encrypted copy from a URL and the user-data carries only
//! the URL, the copy's SHA-256 and the key (in a 0600 file, next to the CA keys this node's
//! user-data already carries).
//!
//! The copy is ChaCha20 (RFC 8439, 96-bit nonce, block counter 0): what `openssl enc -d
//! -chacha20` decrypts on the node, so no tool of kprov's has to be there. It needs no
//! authentication tag: the node checks the copy's SHA-256 from the user-data before decrypting.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use rand::RngCore;

use super::yaml::shell_quote;

/// Where the replacement's user-data writes the restore settings (0600: it holds the key).
pub const RESTORE_ENV_PATH: &str = "/etc/kprov/etcd-restore.env";

/// A key and nonce for one encrypted snapshot copy.
#[derive(Clone, PartialEq, Eq)]
pub struct SnapshotKey {
    /// 256-bit ChaCha20 key.
    pub key: [u8; 32],
    /// 96-bit nonce.
    pub nonce: [u8; 12],
}

impl std::fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotKey(<redacted>)")
    }
}

impl SnapshotKey {
    /// A fresh random key and nonce.
    pub fn generate() -> SnapshotKey {
        let mut k = SnapshotKey {
            key: [0; 32],
            nonce: [0; 12],
        };
        rand::thread_rng().fill_bytes(&mut k.key);
        rand::thread_rng().fill_bytes(&mut k.nonce);
        k
    }

    /// Encrypt (or decrypt: the same operation) `data` in place.
    pub fn apply(&self, data: &mut [u8]) {
        let mut c = chacha20::ChaCha20::new(&self.key.into(), &self.nonce.into());
        c.apply_keystream(data);
    }

    /// `openssl enc -chacha20 -K` argument: the key in hex.
    pub fn openssl_key(&self) -> String {
        hex::encode(self.key)
    }

    /// `openssl enc -chacha20 -iv` argument: OpenSSL's 16-byte IV is the 32-bit block counter
    /// (little-endian, here 0) followed by the 96-bit nonce.
    pub fn openssl_iv(&self) -> String {
        format!("00000000{}", hex::encode(self.nonce))
    }
}

/// What a replacement control plane needs to restore etcd before `kubeadm init`.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdRestore {
    /// Where the node fetches the encrypted copy (a presigned URL: no credentials needed).
    pub url: String,
    /// SHA-256 (hex) of the encrypted copy.
    pub sha256: String,
    /// Its key.
    pub key: SnapshotKey,
}

impl std::fmt::Debug for EtcdRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRestore")
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl EtcdRestore {
    /// The restore settings file `bootstrap.sh` sources (`etcd_image`: the cluster's etcd image,
    /// whose `etcdutl` restores the snapshot).
    pub(super) fn env_file(&self, etcd_image: &str) -> String {
        let q = shell_quote;
        format!(
            "# kprov: the etcd snapshot this control plane restores before kubeadm init (holds its key)\n\
             KPROV_RESTORE_URL={}\nKPROV_RESTORE_SHA256={}\nKPROV_RESTORE_KEY={}\nKPROV_RESTORE_IV={}\nKPROV_ETCD_IMAGE={}\n",
            q(&self.url),
            q(&self.sha256),
            q(&self.key.openssl_key()),
            q(&self.key.openssl_iv()),
            q(etcd_image)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keystream_round_trips_and_changes_every_byte_position() {
        let k = SnapshotKey::generate();
        let plain = b"etcd snapshot bytes".to_vec();
        let mut data = plain.clone();
        k.apply(&mut data);
        assert_ne!(data, plain);
        k.apply(&mut data);
        assert_eq!(data, plain);
        assert_eq!(k.openssl_iv().len(), 32);
        assert!(k.openssl_iv().starts_with("00000000"));
        assert!(!format!("{k:?}").contains(&k.openssl_key()));
    }
}
