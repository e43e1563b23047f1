#!/usr/bin/env bash
# Resident memory of wse-server per idle WebSocket connection (the issue #2 figure).
# Builds the release server and benchmark, then runs membench with the given flags, e.g.
#   scripts/membench.sh --connections 10000 --shards 1
#   scripts/membench.sh --json -- --backlog 8192     (flags after -- go to wse-server)
# Honours CARGO_TARGET_DIR; the server binary is taken from the same target directory
# unless --server is given.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p wse-shard -p wse-bench

server_flag=()
case " $* " in
  *" --server "* | *" --server="*) ;;
  *) server_flag=(--server "$target/release/wse-server") ;;
esac
exec "$target/release/membench" "${server_flag[@]}" "$@"
