#!/usr/bin/env bash
# Run the Autobahn TestSuite fuzzing client against `wse-server --echo`.
#
# Usage: scripts/autobahn.sh [kosoku|wstest] [SPEC]
#
# Builds nothing: WSE_SERVER names the server binary (default target/release/wse-server).
# SPEC (or AUTOBAHN_SPEC) picks the spec file, default scripts/autobahn/fuzzingclient.json
# (cases 1-7, 9, 10); fuzzingclient-deflate.json is the permessage-deflate subset CI runs,
# fuzzingclient-deflate-full.json all of 12.* and 13.*. Both runners read the spec (wstest
# as its spec, kosoku through the flags built from it). Reports go to the spec's outdir,
# with `kosoku` for `wstest` in its name when kosoku runs. The server compresses every
# reply that shrinks (--compression-threshold 0), so permessage-deflate is exercised both
# ways. Exits non-zero when any case is FAILED, WRONG CODE, UNCLEAN or otherwise not
# passing, when a selected case group is missing, or when the runner itself fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runner="${1:-kosoku}"
server="${WSE_SERVER:-target/release/wse-server}"
spec="${2:-${AUTOBAHN_SPEC:-scripts/autobahn/fuzzingclient.json}}"
server_log="reports/autobahn/server-$runner-$(basename "$spec" .json).log"
kosoku=.venv/bin/kosoku
wstest="${WSTEST:-.venv/wstest/bin/wstest}"
startup_timeout_s=10

main() {
  check_tools

  # wstest writes where its spec says; kosoku gets a directory of its own beside it.
  outdir="$(spec_field 'os.path.normpath(d["outdir"])')"
  if [[ "$runner" == kosoku ]]; then
    outdir="${outdir/wstest/kosoku}"
  fi
  [[ "$outdir" == reports/* ]] || die "spec outdir $outdir must be under reports/"

  local url host port
  url="$(spec_field 'd["servers"][0]["url"]')"
  host="$(spec_field 'urlsplit(d["servers"][0]["url"]).hostname')"
  port="$(spec_field 'urlsplit(d["servers"][0]["url"]).port')"

  if port_open "$host" "$port"; then
    die "$host:$port already accepts connections; stop whatever listens there first"
  fi
  rm -rf "$outdir"
  mkdir -p "$outdir"

  start_server "$host" "$port"
  wait_for_port "$host" "$port"

  local started=$SECONDS runner_rc=0
  echo "autobahn: $runner against $url (server log: $server_log)"
  # In the background so that a TERM or INT reaches the traps without waiting for it.
  run_"$runner" "$url" &
  runner_pid=$!
  wait "$runner_pid" || runner_rc=$?
  runner_pid=
  local elapsed=$((SECONDS - started))
  stop_server

  [[ -f "$outdir/index.json" ]] || die "$runner wrote no $outdir/index.json (exit $runner_rc)"
  local summary_rc=0
  python3 scripts/autobahn/summary.py "$outdir/index.json" "$spec" \
    "Autobahn TestSuite via $runner against $server --echo, ${elapsed}s" || summary_rc=$?
  echo "reports: $outdir/index.html"

  if ((summary_rc != 0 || runner_rc != 0)); then
    die "conformance failed (summary exit $summary_rc, $runner exit $runner_rc)"
  fi
  echo "autobahn: passed"
}

check_tools() {
  case "$runner" in
    kosoku) [[ -x "$kosoku" ]] || die "$kosoku missing: run 'make venv'" ;;
    wstest) [[ -x "$wstest" ]] || die "$wstest missing: run 'make wstest-venv'" ;;
    *) die "unknown runner '$runner' (expected kosoku or wstest)" ;;
  esac
  [[ -x "$server" ]] || die "server binary $server missing: run 'make build' or set WSE_SERVER"
}

# kosoku has no spec-file support yet, so the spec's case globs become -i flags.
run_kosoku() {
  local url="$1" args=() pattern
  while read -r pattern; do
    args+=(-i "$pattern")
  done < <(spec_field '"\n".join(d["cases"])')
  while read -r pattern; do
    [[ -n "$pattern" ]] && args+=(-x "$pattern")
  done < <(spec_field '"\n".join(d["exclude-cases"])')
  exec "$kosoku" -m fuzzingclient "$url" "${args[@]}" -o "$outdir"
}

# wstest always exits 0; the verdict comes from index.json in main.
run_wstest() {
  exec "$wstest" -m fuzzingclient -s "$spec"
}

start_server() {
  local host="$1" port="$2"
  mkdir -p "$(dirname "$server_log")"
  "$server" --echo --host "$host" --port "$port" --max-message-size 16777216 \
    --compression-threshold 0 >"$server_log" 2>&1 &
  server_pid=$!
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

cleanup() {
  if [[ -n "${runner_pid:-}" ]]; then
    kill -TERM "$runner_pid" 2>/dev/null || true
  fi
  stop_server
}

# Stop the server with SIGTERM, then SIGKILL if it is still there after 5 s.
stop_server() {
  [[ -n "${server_pid:-}" ]] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  local _
  for _ in {1..50}; do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

wait_for_port() {
  local host="$1" port="$2" _
  for _ in $(seq $((startup_timeout_s * 10))); do
    port_open "$host" "$port" && return 0
    if ! kill -0 "$server_pid" 2>/dev/null; then
      tail -n 20 "$server_log" >&2 || true
      die "server exited before accepting connections"
    fi
    sleep 0.1
  done
  die "server did not accept connections on $host:$port within ${startup_timeout_s}s"
}

port_open() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Evaluate a Python expression over the spec (as `d`) and print it.
spec_field() {
  python3 -c "
import json, os, sys
from urllib.parse import urlsplit
d = json.load(open(sys.argv[1]))
print($1)" "$spec"
}

die() {
  echo "autobahn: $*" >&2
  exit 1
}

main
