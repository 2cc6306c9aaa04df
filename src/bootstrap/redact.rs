//! Taking the secrets out of rendered user-data before it is shown or logged.

use crate::secrets::ClusterSecrets;

/// Replace secrets in rendered user-data by `<redacted>`: every PEM private key block (line by
/// line, so YAML stays valid), the bootstrap token and the certificate key.
pub fn redact(text: &str, secrets: &ClusterSecrets) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_key = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let indent = &body[..body.len() - body.trim_start().len()];
        if !in_key && body.contains("-----BEGIN") && body.contains("PRIVATE KEY-----") {
            in_key = !body.contains("-----END");
            out.push_str(indent);
            out.push_str("<redacted>");
            out.push_str(&line[body.len()..]);
            continue;
        }
        if in_key {
            if body.contains("-----END") {
                in_key = false;
            }
            continue;
        }
        out.push_str(line);
    }
    let mut out = out.replace(&secrets.token.token, "<redacted>");
    if let Some((_, secret)) = secrets.token.token.split_once('.') {
        if secret.len() >= 8 {
            out = out.replace(secret, "<redacted>");
        }
    }
    if !secrets.certificate_key.is_empty() {
        out = out.replace(&secrets.certificate_key, "<redacted>");
    }
    out
}
