#!/usr/bin/env bash
# Fan-out throughput and memory of wse-server (the issue #4 figure): one topic, 1,000
# subscribers, zero loss checked by offsets, RSS while one subscriber is stalled; one row per
# wire mode (plain JSON, C: compression, msgpack) that the server offers.
# Builds the release server and benchmark, then runs fanoutbench with the given flags, e.g.
#   scripts/fanout-bench.sh --subscribers 500 --modes json
#   scripts/fanout-bench.sh --json -- --shards 1     (flags after -- go to wse-server)
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
exec "$target/release/fanoutbench" "${server_flag[@]}" "$@"
