//! kubeadm bootstrap tokens and certificate keys, from the operating system's CSPRNG.

use std::time::Duration;

use super::{random_bytes, PkiError};

/// A kubeadm bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`) and its expiry.
#[derive(Clone)]
pub struct BootstrapToken {
    /// `id.secret`. Never printed.
    pub token: String,
    /// When kubeadm stops accepting it: the TTL (`spec.bootstrap.tokenTTL`) after it was issued.
    pub expires: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("token", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

impl BootstrapToken {
    /// The token id (the part before the dot), which is not secret: kubeadm shows it in
    /// `kubeadm token list` and names the token's Secret `bootstrap-token-ID`.
    pub fn id(&self) -> &str {
        self.token.split_once('.').map(|(id, _)| id).unwrap_or("")
    }
}

const TOKEN_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `n` characters uniformly drawn from `[a-z0-9]` (rejection sampling, no modulo bias).
fn random_token_chars(n: usize) -> Result<String, PkiError> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        random_bytes(&mut buf)?;
        // 252 = 7 * 36: bytes at or above it would favour the first characters.
        for b in buf.iter().copied().filter(|b| *b < 252) {
            if out.len() == n {
                break;
            }
            out.push(char::from(TOKEN_ALPHABET[usize::from(b % 36)]));
        }
    }
    Ok(out)
}

/// A new bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}` that expires `ttl` from now.
pub fn new_bootstrap_token(ttl: Duration) -> Result<BootstrapToken, PkiError> {
    let id = random_token_chars(6)?;
    let secret = random_token_chars(16)?;
    let ttl = chrono::Duration::from_std(ttl)
        .map_err(|_| PkiError::Invalid("token TTL is too long".into()))?;
    let expires = chrono::Utc::now()
        .checked_add_signed(ttl)
        .ok_or_else(|| PkiError::Invalid("token TTL is too long".into()))?;
    Ok(BootstrapToken {
        token: format!("{id}.{secret}"),
        expires,
    })
}

/// True if `s` has kubeadm's token format `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn is_valid_token(s: &str) -> bool {
    let ok = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match s.split_once('.') {
        Some((id, secret)) => ok(id, 6) && ok(secret, 16),
        None => false,
    }
}

/// A new kubeadm certificate key: 32 random bytes as 64 lowercase hex characters (what
/// `kubeadm certs certificate-key` prints; it encrypts the uploaded control-plane certificates).
pub fn new_certificate_key() -> Result<String, PkiError> {
    let mut key = [0u8; 32];
    random_bytes(&mut key)?;
    Ok(hex::encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_format_and_expiry() {
        for _ in 0..50 {
            let t = new_bootstrap_token(Duration::from_secs(3600)).unwrap();
            assert!(is_valid_token(&t.token));
            let left = t.expires - chrono::Utc::now();
            assert!((3590..=3600).contains(&left.num_seconds()));
        }
        assert!(!is_valid_token("abcdef.0123456789abcdeF"));
        assert!(!is_valid_token("abcdef0123456789abcdef"));
        assert!(!is_valid_token("abcde.0123456789abcdefg"));
    }

    #[test]
    fn certificate_key_is_64_hex() {
        let k = new_certificate_key().unwrap();
        assert_eq!(k.len(), 64);
        assert!(k
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(k, new_certificate_key().unwrap());
    }
}
