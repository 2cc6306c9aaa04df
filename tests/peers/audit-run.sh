#!/usr/bin/env bash
# audit-run.sh KPROV [ARGS...] — how the test suite runs kprov (testkit/src/kprov_cmd.rs).
#
# Without KPROV_AUDIT_DIR it simply execs KPROV. With it (tests/run.sh sets it), every run gets
# a directory $KPROV_AUDIT_DIR/runs/ID holding what a leak could show up in: its argv, its
# stdout and stderr (teed: the test still sees them), and a debug log (KPROV_LOG_FILE), plus
# the secrets the run had access to — values of secret environment variables, the state
# encryption key, docker config.json credentials, and the secret files of a file:// state
# store — for tests/peers/leakscan.py to look for after the suite. The audit directory is 0700.
# kprov is exec'ed, so its PID is this script's (kill -9 tests keep working).
set -u
bin=$1
shift
[ -n "${KPROV_AUDIT_DIR:-}" ] || exec "$bin" "$@"

umask 077
d=$KPROV_AUDIT_DIR/runs/$(date +%s%N)-$$
mkdir -p "$d/store-secrets"
printf '%s\n' "$@" > "$d/argv"

# secret values this run can see
{
  while IFS='=' read -r -d '' name value; do
    case $name in
      *SECRET*|*PASSWORD*|*SESSION_TOKEN*|*_TOKEN) [ -n "$value" ] && printf '%s\n' "$value" ;;
    esac
  done < <(env -0)
  kf=${KPROV_STATE_ENCRYPTION_KEY_FILE:-}
  [ -n "$kf" ] && [ -f "$kf" ] && { head -c 4096 "$kf"; echo; }
  cfg=${DOCKER_CONFIG:-${HOME:-/nonexistent}/.docker}/config.json
  [ -f "$cfg" ] && python3 - "$cfg" <<'PY' 2>/dev/null
import base64, json, sys
for v in json.load(open(sys.argv[1])).get("auths", {}).values():
    if v.get("auth"):
        print(base64.b64decode(v["auth"]).decode(errors="replace").split(":", 1)[-1])
    for k in ("password", "identitytoken", "registrytoken"):
        if v.get(k):
            print(v[k])
PY
} > "$d/secrets" 2>/dev/null

# the file:// state store's secrets (keys, tokens) as they are before this run
store=${KPROV_STATE_STORE:-}
prev=
for a in "$@"; do
  case $prev in --state) store=$a ;; esac
  case $a in --state=*) store=${a#--state=} ;; esac
  prev=$a
done
case $store in
  file://*)
    root=${store#file://}
    if [ -d "$root" ]; then
      n=0
      while IFS= read -r -d '' f; do
        n=$((n + 1))
        cp "$f" "$d/store-secrets/$n" 2>/dev/null
      done < <(find "$root" -maxdepth 4 -type f \( -path '*/secrets/*' -o -path '*/pki/*.key' \) -print0 2>/dev/null)
    fi
    ;;
esac

if [ -n "${KPROV_LOG_FILE:-}" ]; then
  # The test reads this debug log itself (e.g. to check what was logged): keep it where the test
  # wants it; the scan reads it through a link.
  ln -s "$(realpath -m "$KPROV_LOG_FILE")" "$d/log"
else
  export KPROV_LOG_FILE=$d/log
fi
exec > >(tee "$d/stdout") 2> >(tee "$d/stderr" >&2)
exec "$bin" "$@"
