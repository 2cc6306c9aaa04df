#!/usr/bin/env python3
"""A small token server for the docker distribution token auth flow, for kprov's mirror tests.

The registry (Debian docker-registry, `auth: token: {realm, service, issuer, rootcertbundle}`)
answers 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`; the client asks this
server for a token (HTTP Basic with the docker config.json credentials) and retries with it.

Tokens are JWTs signed ES256 (P-256 key), with the signing certificate in the header's `x5c`
chain; the registry trusts it because its issuer is in `rootcertbundle`. Claims per the
distribution token spec: iss, sub, aud (the service), exp, nbf, iat, jti, and
`access: [{"type": "repository", "name": REPO, "actions": [...]}]` — only the requested
actions the ACL allows.

  python3 tokenserver.py --listen PORT --sign-cert leaf.pem --sign-key leaf.key \
      --issuer ISSUER --users users.json --acl acl.json --log tokens.jsonl \
      [--tls-cert server.pem --tls-key server.key] [--expires-in 300] [--issued FILE]

users.json: {"user": "password", ...}
acl.json:   [{"service": "svc", "account": "user", "name": "REGEX", "actions": ["pull", "push"]}, ...]
            (every field but actions optional: missing = any; anonymous requests have account "")
--log:      one JSON line per request: service, account, requested scopes, granted access and the
            token (so tests can check scoping and that no token leaks into a client's output).
--issued:   optional; each token appended as one line (the suite's secret-leak scan reads
            $KPROV_AUDIT_DIR/issued/*, see tests/peers/leakscan.py).
Bad credentials answer 401; no credentials get a token with empty access (like Docker Hub).
GET /healthz answers 200.

Needs `cryptography` (the kprov peers venv has it through moto).
"""
import argparse, base64, http.server, json, re, ssl, threading, time, urllib.parse, uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

LOCK = threading.Lock()


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def load():
    with open(ARGS.sign_key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    with open(ARGS.sign_cert, "rb") as f:
        certs = x509.load_pem_x509_certificates(f.read())
    x5c = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certs]
    with open(ARGS.users) as f:
        users = json.load(f)
    with open(ARGS.acl) as f:
        acl = json.load(f)
    return key, x5c, users, acl


def sign(key, x5c, claims):
    header = {"typ": "JWT", "alg": "ES256", "x5c": x5c}
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64url(json.dumps(claims, separators=(",", ":")).encode())
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def allowed(acl, service, account, name, action):
    for rule in acl:
        if rule.get("service") not in (None, service):
            continue
        if rule.get("account") not in (None, account):
            continue
        if "name" in rule and not re.fullmatch(rule["name"], name):
            continue
        if action in rule.get("actions", []):
            return True
    return False


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body, extra=None):
        b = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(b)

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path == "/healthz":
            return self.reply(200, {"ok": True})
        if u.path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND"}]})
        q = urllib.parse.parse_qs(u.query)
        service = q.get("service", [""])[0]
        scopes = [s for v in q.get("scope", []) for s in v.split(" ") if s]
        account = ""
        auth = self.headers.get("Authorization", "")
        if auth:
            try:
                kind, value = auth.split(" ", 1)
                user, _, password = base64.b64decode(value).decode().partition(":")
            except Exception:
                kind, user, password = "", "", None
            if kind.lower() != "basic" or USERS.get(user) is None or USERS[user] != password:
                self.record({"service": service, "account": user, "requested": scopes,
                             "granted": [], "token": None, "refused": True})
                return self.reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                                    "message": "invalid username or password"}]},
                                  {"WWW-Authenticate": 'Basic realm="kprov-test-token"'})
            account = user
        access = []
        for s in scopes:
            parts = s.split(":")
            if len(parts) < 3:
                continue
            typ, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            granted = [a for a in actions if allowed(ACL, service, account, name, a)]
            if granted:
                access.append({"type": typ, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": ARGS.issuer, "sub": account, "aud": service, "exp": now + ARGS.expires_in,
                  "nbf": now - 1, "iat": now, "jti": str(uuid.uuid4()), "access": access}
        token = sign(KEY, X5C, claims)
        if ARGS.issued:
            with LOCK, open(ARGS.issued, "a") as f:
                f.write(token + "\n")
        self.record({"service": service, "account": account, "requested": scopes,
                     "granted": access, "token": token})
        self.reply(200, {"token": token, "access_token": token, "expires_in": ARGS.expires_in,
                         "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})

    def record(self, entry):
        with LOCK, open(ARGS.log, "a") as f:
            f.write(json.dumps(entry) + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--sign-cert", required=True)
    p.add_argument("--sign-key", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--users", required=True)
    p.add_argument("--acl", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--expires-in", type=int, default=300)
    p.add_argument("--issued")
    ARGS = p.parse_args()
    KEY, X5C, USERS, ACL = load()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", ARGS.listen), H)
    if ARGS.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.tls_cert, ARGS.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(f"tokenserver :{ARGS.listen} issuer {ARGS.issuer}", flush=True)
    srv.serve_forever()
