#!/usr/bin/env python3
"""Secret-leak scan over every kprov run of the test suite (issue #10).

tests/run.sh runs the suite with KPROV_AUDIT_DIR set; tests/peers/audit-run.sh then records,
per kprov run, its argv, stdout, stderr and debug log (KPROV_LOG_FILE), and the secrets it could
see (secret env values, the state encryption key, docker credentials, the file:// store's keys
and tokens). Peers add the secrets they issue to $KPROV_AUDIT_DIR/issued/* (the ZStack
simulator's session ids and access-key secrets, the token server's bearer tokens).

This script fails (exit 1) if any of those secrets, any PEM private key, or anything shaped like
a kubeadm bootstrap token appears in any run's argv, stderr or log, or in its stdout — except the
stdout of a run that explicitly asked for secrets (`get userdata --show-secrets`, the only kprov
command that prints secrets), which is what the user requested. It also fails if a test gave
kprov a secret too short to be searched for (under MIN_SECRET characters, e.g. `password`, which
ordinary text contains): tests must use distinctive secrets so that every leak can be found.

  leakscan.py AUDIT_DIR [--min-runs N]
  leakscan.py --self-test
"""
import argparse
import json
import os
import re
import sys
import tempfile

PEM_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
# kubeadm bootstrap token: [a-z0-9]{6}.[a-z0-9]{16}
TOKEN = re.compile(r"(?<![A-Za-z0-9])[a-z0-9]{6}\.[a-z0-9]{16}(?![A-Za-z0-9])")
# Shorter values would match ordinary words. A secret the test gave kprov (environment, key file,
# docker credentials) must be at least this long, or the scan fails; short values kprov itself
# keeps in the store (e.g. a bootstrap token's public id) are looked for as whole argv items.
MIN_SECRET = 10
CHANNELS = ("argv", "stderr", "log", "stdout")


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def secret_values(text):
    """Searchable pieces of a secret file: PEM bodies by line, JSON string values, or lines."""
    out = set()
    if "-----BEGIN" in text:
        for line in text.splitlines():
            line = line.strip()
            if len(line) >= 40 and not line.startswith("-----"):
                out.add(line)
        return out
    try:
        doc = json.loads(text)
        stack = [doc]
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                stack.extend(v.values())
            elif isinstance(v, list):
                stack.extend(v)
            elif isinstance(v, str):
                out.add(v)
        return out
    except ValueError:
        pass
    for line in text.splitlines():
        if line.strip():
            out.add(line.strip())
    return out


def allowed_stdout(argv):
    """The run asked to print secrets on stdout: `get userdata … --show-secrets` (`export
    kubeconfig` only writes a file; it has no stdout mode)."""
    return "--show-secrets" in argv and "userdata" in argv


def scan(audit, min_runs):
    runs_dir = os.path.join(audit, "runs")
    runs = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    issued = set()
    issued_dir = os.path.join(audit, "issued")
    if os.path.isdir(issued_dir):
        for name in os.listdir(issued_dir):
            issued |= secret_values(read(os.path.join(issued_dir, name)))
    leaks = []
    stats = {"runs": len(runs), "with_log": 0, "log_lines": 0, "secrets": 0, "short": 0,
             "allowed_stdout": 0}
    for run in runs:
        d = os.path.join(runs_dir, run)
        argv = read(os.path.join(d, "argv")).splitlines()
        secrets = set(issued)
        for line in read(os.path.join(d, "secrets")).splitlines():
            if line.strip():
                secrets.add(line.strip())
                if len(line.strip()) < MIN_SECRET:
                    leaks.append("%s: kprov %s was given a secret of %d chars, too short to be "
                                 "searched for: give the test a distinctive secret of at least %d "
                                 "chars" % (run, " ".join(argv)[:120], len(line.strip()),
                                            MIN_SECRET))
        sdir = os.path.join(d, "store-secrets")
        if os.path.isdir(sdir):
            for name in os.listdir(sdir):
                secrets |= secret_values(read(os.path.join(sdir, name)))
        long_secrets = {s for s in secrets if len(s) >= MIN_SECRET}
        stats["secrets"] += len(long_secrets)
        stats["short"] += len(secrets) - len(long_secrets)
        texts = {c: read(os.path.join(d, c)) for c in CHANNELS}
        if texts["log"]:
            stats["with_log"] += 1
            stats["log_lines"] += texts["log"].count("\n")
        skip_stdout = allowed_stdout(argv)
        stats["allowed_stdout"] += skip_stdout
        for channel, text in texts.items():
            if channel == "stdout" and skip_stdout:
                continue
            where = "%s %s (kprov %s)" % (run, channel, " ".join(argv)[:120])
            if PEM_KEY.search(text):
                leaks.append("%s: a PEM private key" % where)
            m = TOKEN.search(text)
            if m:
                leaks.append("%s: a bootstrap-token-shaped string %s…" % (where, m.group(0)[:7]))
            for s in long_secrets:
                if s in text:
                    leaks.append("%s: a secret value (%s…, %d chars)" % (where, s[:3], len(s)))
        for s in secrets - long_secrets:
            if s in argv:
                leaks.append("%s argv: a secret value as an argument" % run)
    print("leakscan: %(runs)d kprov runs scanned (%(with_log)d with a debug log, %(log_lines)d log "
          "lines), %(secrets)d secret values checked (+%(short)d short ones in argv only), "
          "%(allowed_stdout)d runs printed secrets on request" % stats)
    if len(runs) < min_runs:
        print("leakscan: FAILED: only %d kprov runs were audited (expected ≥ %d): is every test "
              "running kprov through testkit/src/kprov_cmd.rs?" % (len(runs), min_runs))
        return 1
    if leaks:
        print("leakscan: FAILED: %d leak(s):" % len(leaks))
        for l in leaks[:200]:
            print("  " + l)
        return 1
    print("leakscan: no secret found in argv, stdout, stderr or logs")
    return 0


def self_test():
    """Plant one leak per channel and kind; each must be found, and a clean run must pass."""
    token = "abcdef.0123456789abcdef"
    pem = "-----BEGIN PRIVATE KEY-----\n" + "A" * 64 + "\n-----END PRIVATE KEY-----\n"
    zstack_pw = "Zs-E2e-Pw-4c9d1b"  # as tests/e2e/zstack_e2e.rs gives it
    # (channel, text, secret, where the secret comes from, argv when not the planted one)
    cases = [
        ("stderr", "error: " + pem, None, None, None),
        ("log", "DEBUG joining with " + token, None, None, None),
        ("argv", "--token\n" + token, None, None, None),
        ("stdout", "session s3cr3t-session-0001 ok", "s3cr3t-session-0001", "store", None),
        ("log", "pem body " + "A" * 64, pem, "store", None),
        ("stderr", "login as admin/%s failed" % zstack_pw, zstack_pw, "env", None),
        # `export kubeconfig` has no stdout mode: nothing allows secrets on its stdout
        ("stdout", pem, None, None, "export\nkubeconfig\n--stdout\n-\n"),
        ("stdout", pem, None, None, "get\ncluster\n--show-secrets\n"),
        # a secret too short to be searched for is itself a failure
        ("stderr", "no output", "password", "env", None),
    ]
    failures = 0
    for channel, text, secret, source, argv in cases:
        with tempfile.TemporaryDirectory() as audit:
            d = os.path.join(audit, "runs", "1")
            os.makedirs(os.path.join(d, "store-secrets"))
            with open(os.path.join(d, "argv"), "w") as f:
                f.write(argv or (text if channel == "argv" else "get\ncluster\n"))
            if channel != "argv":
                with open(os.path.join(d, channel), "w") as f:
                    f.write(text)
            if secret:
                path = os.path.join(d, "store-secrets", "1") if source == "store" \
                    else os.path.join(d, "secrets")
                with open(path, "w") as f:
                    f.write(secret + "\n")
            if scan(audit, 1) != 1:
                print("leakscan self-test: a leak in %s (%s) was NOT found"
                      % (channel, (argv or "").replace("\n", " ") or text[:30]))
                failures += 1
    with tempfile.TemporaryDirectory() as audit:
        d = os.path.join(audit, "runs", "1")
        os.makedirs(d)
        with open(os.path.join(d, "argv"), "w") as f:
            f.write("get\nuserdata\nc1\n--show-secrets\n")
        with open(os.path.join(d, "secrets"), "w") as f:
            f.write(zstack_pw + "\n")
        with open(os.path.join(d, "stdout"), "w") as f:
            f.write(pem + token)
        with open(os.path.join(d, "stderr"), "w") as f:
            f.write("a token file and a private key were written\n")
        if scan(audit, 1) != 0:
            print("leakscan self-test: a clean run was reported")
            failures += 1
    print("leakscan self-test: %s" % ("FAILED" if failures else "ok"))
    return 1 if failures else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("audit_dir", nargs="?")
    p.add_argument("--min-runs", type=int, default=100)
    p.add_argument("--self-test", action="store_true")
    a = p.parse_args()
    if a.self_test:
        return self_test()
    if not a.audit_dir:
        p.error("AUDIT_DIR is required")
    return scan(a.audit_dir, a.min_runs)


if __name__ == "__main__":
    sys.exit(main())
