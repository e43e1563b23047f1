#!/usr/bin/env bash
# System tuning for large benchmark runs (hundreds of thousands of loopback connections),
# and its undoing. Reports, setting by setting, what it changed, what was already enough and
# what it could not change.
#
#   scripts/bench-tune.sh apply STATE     raise the settings; remember the old values in STATE
#   scripts/bench-tune.sh restore STATE   put back what STATE remembers, then delete it
#   scripts/bench-tune.sh report          show the current values
#
# Settings: the ephemeral port range, the accept and SYN backlogs, the system-wide file
# limits, the connection-tracking table (loopback connections are tracked too), and this
# shell's open-file limit (per process; often a hard limit that cannot be raised, in which
# case the benchmark runs several processes). Loopback source addresses: Linux routes all of
# 127.0.0.0/8 to `lo`, so none need adding; the script checks that and says so.
set -euo pipefail

# name, wanted value (a minimum; the port range is set as written)
settings=(
  "net.ipv4.ip_local_port_range|16384 65535"
  "net.core.somaxconn|65535"
  "net.ipv4.tcp_max_syn_backlog|65535"
  "fs.file-max|4194304"
  "fs.nr_open|4194304"
  "net.netfilter.nf_conntrack_max|2097152"
)

main() {
  case "${1:-}" in
    apply) apply "${2:?state file}" ;;
    restore) restore "${2:?state file}" ;;
    report) report ;;
    *)
      echo "usage: $0 apply STATE | restore STATE | report" >&2
      exit 2
      ;;
  esac
}

apply() {
  local state="$1" entry name want old
  : >"$state"
  for entry in "${settings[@]}"; do
    name="${entry%%|*}"
    want="${entry#*|}"
    if ! old="$(sysctl -n "$name" 2>/dev/null)"; then
      echo "bench-tune: $name: not present on this kernel, left alone"
      continue
    fi
    old="$(echo "$old" | tr -s '[:space:]' ' ' | sed 's/ $//')"
    if enough "$name" "$old" "$want"; then
      echo "bench-tune: $name = $old already enough"
      continue
    fi
    if sysctl -q -w "$name=$want" 2>/dev/null; then
      echo "$name|$old" >>"$state"
      echo "bench-tune: $name: $old -> $want"
    else
      echo "bench-tune: $name: could not change it (stays $old)"
    fi
  done
  loopback
  files
}

restore() {
  local state="$1" name old
  [[ -f "$state" ]] || {
    echo "bench-tune: nothing to restore ($state missing)"
    return 0
  }
  while IFS='|' read -r name old; do
    if sysctl -q -w "$name=$old" 2>/dev/null; then
      echo "bench-tune: $name restored to $old"
    else
      echo "bench-tune: $name: could not restore $old"
    fi
  done <"$state"
  rm -f "$state"
}

report() {
  local entry name
  for entry in "${settings[@]}"; do
    name="${entry%%|*}"
    echo "$name = $(sysctl -n "$name" 2>/dev/null || echo 'not present')"
  done
  loopback
  files
}

# True when the current value already covers the wanted one.
enough() {
  local name="$1" old="$2" want="$3"
  if [[ "$name" == net.ipv4.ip_local_port_range ]]; then
    local low high want_low want_high
    read -r low high <<<"$old"
    read -r want_low want_high <<<"$want"
    ((high - low >= want_high - want_low))
  else
    ((old >= want))
  fi
}

loopback() {
  if ip route get 127.0.0.250 2>/dev/null | grep -q '^local'; then
    echo "bench-tune: 127.0.0.0/8 is local: no loopback aliases needed"
  else
    echo "bench-tune: 127.0.0.250 is not local: add loopback aliases (ip addr add 127.0.0.N/8 dev lo)"
  fi
}

files() {
  local soft hard
  soft="$(ulimit -Sn)"
  hard="$(ulimit -Hn)"
  if (ulimit -n 1048576) 2>/dev/null; then
    echo "bench-tune: open files per process: $soft now, may be raised to 1048576 (hard $hard):" \
      "scripts/loadbench.sh raises it for its run"
  else
    echo "bench-tune: open files per process: $soft (hard $hard) could not be raised;" \
      "loadbench spreads connections over several processes"
  fi
}

main "$@"
