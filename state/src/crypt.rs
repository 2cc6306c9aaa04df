//! Client-side encryption of secret objects, for any backend.
//!
//! Server-side encryption (`s3://` asks for SSE-S3 on secret keys) protects against a stolen
//! disk at the provider, not against someone who can read the bucket. With
//! `KPROV_STATE_ENCRYPTION_KEY_FILE=PATH` kprov additionally encrypts every secret object
//! (keys for which [`crate::is_secret_key`] is true: `.../pki/...`, `.../secrets/...`) before it
//! leaves the process, with a 32-byte key that only the user keeps.
//!
//! Format of an encrypted object (all of it is authenticated):
//!
//! ```text
//! "KPROVENC1" | alg (1 byte, 1 = XChaCha20-Poly1305) | key id (8 bytes) | nonce (24 bytes) | ciphertext+tag
//! ```
//!
//! - XChaCha20-Poly1305 because its 192-bit nonce can be drawn at random for every object
//!   without a counter to keep (objects are written from many machines over years).
//! - The key id (a truncated SHA-256 of the key) lets a wrong key file be told apart from a
//!   modified object in error messages.
//! - The state key (`demo/pki/ca.key`) is associated data: a ciphertext copied under another
//!   key does not decrypt, so one secret cannot be passed off as another.
//!
//! Versions still come from the wrapped store, so compare-and-swap and the lease work unchanged
//! (the version is the version of the ciphertext).

use std::fmt;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{
    is_secret_key, validate_key, Condition, Object, StateError, StateResult, StateStore, Version,
};

/// Environment variable naming the key file that turns client-side encryption on.
pub const KEY_FILE_ENV: &str = "KPROV_STATE_ENCRYPTION_KEY_FILE";

/// Environment variable that lets secret objects written before encryption was enabled be read
/// as plaintext (they are encrypted on their next write). Off by default: see
/// [`EncryptedStore::allow_plaintext`].
pub const ALLOW_PLAINTEXT_ENV: &str = "KPROV_STATE_ENCRYPTION_ALLOW_PLAINTEXT";

/// Magic at the start of every encrypted object; the trailing `1` is the format version.
pub const MAGIC: &[u8; 9] = b"KPROVENC1";

/// Algorithm id of XChaCha20-Poly1305 in the header.
const ALG_XCHACHA20_POLY1305: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = MAGIC.len() + 1 + KEY_ID_LEN + NONCE_LEN;

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;

/// A 32-byte client-side encryption key and where it came from (for messages).
///
/// The key bytes are wiped from memory when the value is dropped and never printed.
#[derive(Clone)]
pub struct EncryptionKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    source: String,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material, only what identifies it.
        f.debug_struct("EncryptionKey")
            .field("source", &self.source)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

fn key_file_error(path: &Path, message: impl Into<String>) -> StateError {
    StateError::Backend {
        location: path.display().to_string(),
        message: message.into(),
    }
}

impl EncryptionKey {
    /// A key from raw bytes; `source` names it in error messages (a path, "test key", ...).
    pub fn from_bytes(bytes: [u8; KEY_LEN], source: impl Into<String>) -> Self {
        EncryptionKey {
            bytes: Zeroizing::new(bytes),
            source: source.into(),
        }
    }

    /// Read a key file: 32 bytes written as 64 hex characters or as base64, surrounding
    /// whitespace ignored. Warns when the file is readable by group or others.
    pub fn load(path: impl AsRef<Path>) -> StateResult<Self> {
        let path = path.as_ref();
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            key_file_error(
                path,
                format!(
                    "cannot read the state encryption key file ({KEY_FILE_ENV}): {e}; fix: point \
                     {KEY_FILE_ENV} at the key the store was encrypted with, or unset it for a store \
                     without client-side encryption (a new key: `openssl rand -hex 32 > {p} && chmod 600 {p}`)",
                    p = path.display()
                ),
            )
        })?);
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "state encryption key file {} is readable by other users; restrict it with `chmod 600 {}`",
                    path.display(),
                    path.display()
                );
            }
        }
        let bytes = parse_key_text(text.trim()).ok_or_else(|| {
            key_file_error(
                path,
                format!(
                    "not a state encryption key ({KEY_FILE_ENV}): the file must hold 32 random bytes as 64 hex \
                     characters or base64; fix: point {KEY_FILE_ENV} at the right key file, or create a new key with \
                     `openssl rand -hex 32 > {p} && chmod 600 {p}`",
                    p = path.display()
                ),
            )
        })?;
        Ok(EncryptionKey::from_bytes(
            *bytes,
            path.display().to_string(),
        ))
    }

    /// Where the key came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn key_id(&self) -> [u8; KEY_ID_LEN] {
        // Domain-separated so the id can never equal a hash of the key used elsewhere.
        let digest = Sha256::new()
            .chain_update(b"kprov state encryption key id\0")
            .chain_update(self.bytes.as_slice())
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        id
    }

    /// Short public fingerprint of the key (hex of the key id stored in each object), to tell
    /// key files apart without revealing them.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.key_id())
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bytes.as_slice().into())
    }

    /// Encrypt `plaintext` stored under state key `name` (bound as associated data).
    pub fn encrypt(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16);
        out.extend_from_slice(MAGIC);
        out.push(ALG_XCHACHA20_POLY1305);
        out.extend_from_slice(&self.key_id());
        out.extend_from_slice(&nonce);
        let aad = aad(&out, name);
        let ct = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypt an object read from state key `name`. Errors name the key and say whether the
    /// key file is the wrong one or the object was changed.
    pub fn decrypt(&self, name: &str, data: &[u8]) -> StateResult<Vec<u8>> {
        let fail = |message: String| StateError::Backend {
            location: name.to_string(),
            message,
        };
        if !is_encrypted(data) {
            return Err(fail(format!(
                "secret object is not encrypted, but client-side encryption is on ({KEY_FILE_ENV}={}); it was written \
                 without encryption (or replaced by someone who can write the store). If you just enabled encryption, \
                 set {ALLOW_PLAINTEXT_ENV}=1 for one run so it is read as is and encrypted when next written",
                self.source
            )));
        }
        if data.len() < HEADER_LEN + 16 {
            return Err(fail("encrypted object is truncated".into()));
        }
        let alg = data[MAGIC.len()];
        if alg != ALG_XCHACHA20_POLY1305 {
            return Err(fail(format!(
                "encrypted with an unknown algorithm id {alg} (written by a newer kprov?)"
            )));
        }
        let id = &data[MAGIC.len() + 1..MAGIC.len() + 1 + KEY_ID_LEN];
        if id != self.key_id() {
            return Err(fail(format!(
                "cannot decrypt: the object was encrypted with a different key (fingerprint {}) than the key file {} \
                 (fingerprint {}): the key file is wrong; point {KEY_FILE_ENV} at the key file this cluster's secrets \
                 were written with",
                hex::encode(id),
                self.source,
                self.fingerprint()
            )));
        }
        let nonce = &data[MAGIC.len() + 1 + KEY_ID_LEN..HEADER_LEN];
        let aad = aad(&data[..HEADER_LEN], name);
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), Payload { msg: &data[HEADER_LEN..], aad: &aad })
            .map_err(|_| {
                fail(format!(
                    "cannot decrypt with the key file {} ({KEY_FILE_ENV}): the key file is wrong, or the object was \
                     modified or copied from another key",
                    self.source
                ))
            })
    }
}

fn aad(header: &[u8], name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + name.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(name.as_bytes());
    aad
}

fn parse_key_text(text: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let decoded = Zeroizing::new(
        if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
                .ok()?
        },
    );
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if decoded.len() != KEY_LEN {
        return None;
    }
    key.copy_from_slice(&decoded);
    Some(key)
}

/// True if `data` starts with the encrypted-object magic.
pub fn is_encrypted(data: &[u8]) -> bool {
    data.starts_with(MAGIC)
}

/// Create a new key file at `path`: 32 random bytes from the OS, hex-encoded, mode 0600.
///
/// Refuses to overwrite an existing file, because losing a key makes every secret encrypted
/// with it unreadable. The parent directory must exist.
pub fn generate_key_file(path: impl AsRef<Path>) -> StateResult<EncryptionKey> {
    let path = path.as_ref();
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut_slice());
    let text = Zeroizing::new(format!("{}\n", hex::encode(bytes.as_slice())));
    let mut f = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return Err(key_file_error(
                path,
                "refusing to overwrite an existing key file: secrets encrypted with it would become unreadable; \
                 choose another path or remove the file yourself",
            ))
        }
        Err(e) => {
            return Err(StateError::Io {
                location: path.display().to_string(),
                cause: e,
            })
        }
    };
    // The umask cannot widen 0600, but an explicit chmod documents the intent and covers odd
    // filesystems that ignore the create mode.
    let written = f
        .write_all(text.as_bytes())
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(0o600)))
        .and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(StateError::Io {
            location: path.display().to_string(),
            cause: e,
        });
    }
    Ok(EncryptionKey::from_bytes(
        *bytes,
        path.display().to_string(),
    ))
}

/// Client-side encryption settings read from the environment.
#[derive(Debug, Clone)]
pub struct EncryptionSettings {
    /// Key file path (`KPROV_STATE_ENCRYPTION_KEY_FILE`).
    pub key_file: PathBuf,
    /// Read unencrypted secret objects as they are (`KPROV_STATE_ENCRYPTION_ALLOW_PLAINTEXT=1`).
    pub allow_plaintext: bool,
}

impl EncryptionSettings {
    /// The settings from the process environment; `None` when encryption is off.
    pub fn from_env() -> Option<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The settings from a variable lookup (testable without touching the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let key_file = get(KEY_FILE_ENV).filter(|v| !v.trim().is_empty())?;
        let allow_plaintext = get(ALLOW_PLAINTEXT_ENV)
            .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
            .unwrap_or(false);
        Some(EncryptionSettings {
            key_file: PathBuf::from(key_file.trim()),
            allow_plaintext,
        })
    }
}

/// Wrap `store` in an [`EncryptedStore`] when `settings` is set, else return it as is. Loads
/// (and so checks) the key file now, so a bad key file fails before any state is touched.
pub fn wrap<S: StateStore + 'static>(
    store: S,
    settings: Option<&EncryptionSettings>,
) -> StateResult<Arc<dyn StateStore>> {
    Ok(match settings {
        None => Arc::new(store),
        Some(s) => {
            let key = EncryptionKey::load(&s.key_file)?;
            Arc::new(EncryptedStore::new(store, key).allow_plaintext(s.allow_plaintext))
        }
    })
}

/// A [`StateStore`] decorator that encrypts secret objects (see the module docs) and passes
/// everything else through unchanged.
#[derive(Debug)]
pub struct EncryptedStore<S> {
    inner: S,
    key: EncryptionKey,
    allow_plaintext: bool,
}

impl<S: StateStore> EncryptedStore<S> {
    /// Encrypt `inner`'s secret objects with `key`.
    pub fn new(inner: S, key: EncryptionKey) -> Self {
        EncryptedStore {
            inner,
            key,
            allow_plaintext: false,
        }
    }

    /// Whether unencrypted secret objects may be read (to migrate a store to encryption).
    ///
    /// Off by default because with encryption on, a plaintext secret can only come from before
    /// encryption was enabled or from someone who can write the store and wants kprov to use
    /// their CA key; the user has to say which it is.
    pub fn allow_plaintext(mut self, allow: bool) -> Self {
        self.allow_plaintext = allow;
        self
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The key objects are encrypted with.
    pub fn key(&self) -> &EncryptionKey {
        &self.key
    }

    fn open(&self, key: &str, bytes: Vec<u8>) -> StateResult<Vec<u8>> {
        if !is_secret_key(key) {
            return Ok(bytes);
        }
        if self.allow_plaintext && !is_encrypted(&bytes) {
            tracing::warn!(
                "secret object {key} is not encrypted yet; it will be encrypted when next written"
            );
            return Ok(bytes);
        }
        self.key.decrypt(key, &bytes)
    }
}

#[async_trait]
impl<S: StateStore> StateStore for EncryptedStore<S> {
    fn url(&self) -> String {
        self.inner.url()
    }

    async fn get(&self, key: &str) -> StateResult<Option<Object>> {
        validate_key(key)?;
        match self.inner.get(key).await? {
            None => Ok(None),
            Some(o) => Ok(Some(Object {
                bytes: self.open(key, o.bytes)?,
                version: o.version,
            })),
        }
    }

    async fn put(&self, key: &str, bytes: &[u8], cond: Condition) -> StateResult<Version> {
        // Validate before encrypting so a bad key is reported as such, not as a backend error.
        validate_key(key)?;
        if is_secret_key(key) {
            let sealed = self.key.encrypt(key, bytes);
            self.inner.put(key, &sealed, cond).await
        } else {
            self.inner.put(key, bytes, cond).await
        }
    }

    async fn list(&self, prefix: &str) -> StateResult<Vec<String>> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str, cond: Condition) -> StateResult<()> {
        self.inner.delete(key, cond).await
    }

    async fn share_url(&self, key: &str, ttl: std::time::Duration) -> StateResult<Option<String>> {
        // a secret object is ciphertext only this store's key opens: not shareable
        if is_secret_key(key) {
            return Ok(None);
        }
        self.inner.share_url(key, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> EncryptionKey {
        EncryptionKey::from_bytes([b; KEY_LEN], format!("test key {b}"))
    }

    #[test]
    fn roundtrip_and_header() {
        let k = key(1);
        let ct = k.encrypt("c/pki/ca.key", b"-----BEGIN PRIVATE KEY-----");
        assert!(ct.starts_with(MAGIC));
        assert_eq!(ct[MAGIC.len()], ALG_XCHACHA20_POLY1305);
        assert!(!ct.windows(10).any(|w| w == b"-----BEGIN"));
        assert_eq!(
            k.decrypt("c/pki/ca.key", &ct).unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        // A fresh nonce per object: the same plaintext never encrypts the same way twice.
        assert_ne!(
            ct,
            k.encrypt("c/pki/ca.key", b"-----BEGIN PRIVATE KEY-----")
        );
    }

    #[test]
    fn wrong_key_tamper_and_moved_objects_are_refused_with_clear_errors() {
        let ct = key(1).encrypt("c/pki/ca.key", b"secret");
        let msg = key(2).decrypt("c/pki/ca.key", &ct).unwrap_err().to_string();
        assert!(
            msg.contains("c/pki/ca.key") && msg.contains("key file is wrong"),
            "{msg}"
        );
        let mut bad = ct.clone();
        *bad.last_mut().unwrap() ^= 1;
        let msg = key(1)
            .decrypt("c/pki/ca.key", &bad)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("key file is wrong") && msg.contains("modified"),
            "{msg}"
        );
        let msg = key(1)
            .decrypt("other/pki/ca.key", &ct)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("other/pki/ca.key") && msg.contains("copied from another key"),
            "{msg}"
        );
        let msg = key(1)
            .decrypt("c/pki/ca.key", b"plain")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("not encrypted") && msg.contains(ALLOW_PLAINTEXT_ENV),
            "{msg}"
        );
        let msg = key(1)
            .decrypt("c/pki/ca.key", &ct[..HEADER_LEN + 3])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("truncated"), "{msg}");
    }

    #[test]
    fn key_file_is_generated_owner_only_loaded_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.key");
        let k = generate_key_file(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.trim().len(), 64);
        let loaded = EncryptionKey::load(&p).unwrap();
        assert_eq!(loaded.fingerprint(), k.fingerprint());
        let msg = generate_key_file(&p).unwrap_err().to_string();
        assert!(msg.contains("refusing to overwrite"), "{msg}");
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            text,
            "existing key file untouched"
        );
        assert!(
            !format!("{loaded:?}").contains(text.trim()),
            "Debug must not print the key"
        );
    }

    #[test]
    fn key_file_accepts_hex_and_base64_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let hexp = dir.path().join("hex");
        std::fs::write(&hexp, format!("  {}\n", hex::encode([7u8; 32]))).unwrap();
        let b64p = dir.path().join("b64");
        std::fs::write(
            &b64p,
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        )
        .unwrap();
        assert_eq!(
            EncryptionKey::load(&hexp).unwrap().fingerprint(),
            key(7).fingerprint()
        );
        assert_eq!(
            EncryptionKey::load(&b64p).unwrap().fingerprint(),
            key(7).fingerprint()
        );
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").unwrap();
        let msg = EncryptionKey::load(&short).unwrap_err().to_string();
        assert!(
            msg.contains("32 random bytes") && msg.contains("openssl rand -hex 32"),
            "{msg}"
        );
        let msg = EncryptionKey::load(dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains(KEY_FILE_ENV), "{msg}");
    }

    #[test]
    fn settings_from_lookup() {
        assert!(EncryptionSettings::from_lookup(|_| None).is_none());
        assert!(
            EncryptionSettings::from_lookup(|k| (k == KEY_FILE_ENV).then(|| " ".into())).is_none()
        );
        let s = EncryptionSettings::from_lookup(|k| match k {
            KEY_FILE_ENV => Some("/k".into()),
            ALLOW_PLAINTEXT_ENV => Some("1".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.key_file, PathBuf::from("/k"));
        assert!(s.allow_plaintext);
    }

    #[tokio::test]
    async fn plaintext_migration_needs_the_opt_in() {
        let dir = tempfile::tempdir().unwrap();
        let plain = crate::file::FileStore::new(dir.path());
        plain
            .put("c/pki/ca.key", b"old plaintext", Condition::None)
            .await
            .unwrap();
        let strict = EncryptedStore::new(crate::file::FileStore::new(dir.path()), key(3));
        assert!(strict.get("c/pki/ca.key").await.is_err());
        let lenient = EncryptedStore::new(crate::file::FileStore::new(dir.path()), key(3))
            .allow_plaintext(true);
        assert_eq!(
            lenient.get("c/pki/ca.key").await.unwrap().unwrap().bytes,
            b"old plaintext"
        );
        lenient
            .put("c/pki/ca.key", b"old plaintext", Condition::None)
            .await
            .unwrap();
        assert!(is_encrypted(
            &plain.get("c/pki/ca.key").await.unwrap().unwrap().bytes
        ));
        assert_eq!(
            strict.get("c/pki/ca.key").await.unwrap().unwrap().bytes,
            b"old plaintext"
        );
    }
}
