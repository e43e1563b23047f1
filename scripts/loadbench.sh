#!/usr/bin/env bash
# Side-by-side benchmark of wse-server, the product it replaces (wse-server 2.5 from PyPI),
# tokio-tungstenite and Python websockets (issue #7).
#
#   scripts/loadbench.sh quick    CI smoke, under 3 minutes: every scenario at small sizes,
#                                 fails when a scenario does not run or loses a message
#   scripts/loadbench.sh full     the README figures, under 30 minutes on a 2-core machine:
#                                 tunes the system (and restores it), runs every size, then
#                                 copies the table and charts into bench/README.md
#
# Extra arguments go to loadbench (`target/release/loadbench --help`). Honours
# CARGO_TARGET_DIR. Results land in reports/bench-quick/ or reports/bench-full/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

preset="${1:?usage: scripts/loadbench.sh quick|full [loadbench flags]}"
shift
case "$preset" in
  quick | full) ;;
  *)
    echo "loadbench.sh: preset must be quick or full, not $preset" >&2
    exit 2
    ;;
esac
target="${CARGO_TARGET_DIR:-target}"

# Copies the charts to bench/charts/ and puts results.md, with the charts, between the
# loadbench markers of bench/README.md.
publish() {
  local out="$1" readme=bench/README.md png
  local begin='<!-- loadbench:begin -->' end='<!-- loadbench:end -->'
  mkdir -p bench/charts
  cp "$out"/*.png bench/charts/
  {
    sed -n "1,/^$begin\$/p" "$readme"
    grep -v '^Chart: ' "$out/results.md"
    for png in "$out"/*.png; do
      png="$(basename "$png")"
      printf '![%s](charts/%s)\n\n' "${png%.png}" "$png"
    done
    sed -n "/^$end\$/,\$p" "$readme"
  } >"$readme.new"
  mv "$readme.new" "$readme"
  echo "loadbench.sh: results and charts copied into $readme"
}
out="reports/bench-$preset"

cargo build --release -p wse-shard -p wse-bench
scripts/setup-bench-venv.sh
mkdir -p "$out"
rm -f "$out"/*.log

# Ours drained from Python: our wheel (make py-build) under CPython 3.12 in the venv that
# scripts/py-bench.sh uses too, the interpreter of the product we replace. Without a wheel
# the inbound row of ours is a Rust drain, labelled provisional.
ours_python=()
shopt -s nullglob
wheels=("$target"/wheels/wse_server-*.whl)
if ((${#wheels[@]} == 1)); then
  ours=.venv/bench-ours
  [[ -x "$ours/bin/python" ]] || "$(readlink -f .venv-bench/bin/python)" -m venv "$ours"
  "$ours/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
    --no-deps "${wheels[0]}"
  "$ours/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$(grep -E '^orjson==' scripts/requirements-dev.txt)"
  ours_python=(--wse-python "$ours/bin/python")
else
  echo "loadbench.sh: no wheel in $target/wheels (make py-build): ours drains in Rust"
fi

if [[ "$preset" == full ]]; then
  state="$out/tuning.saved"
  scripts/bench-tune.sh apply "$state"
  trap 'scripts/bench-tune.sh restore "$state"' EXIT
  ulimit -n 1048576 2>/dev/null || true
fi

echo "loadbench.sh: $(uptime)"
status=0
"$target/release/loadbench" --preset "$preset" --wse-server "$target/release/wse-server" \
  --python .venv-bench/bin/python "${ours_python[@]}" --out "$out" "$@" || status=$?
echo "loadbench.sh: $(uptime)"

if [[ "$preset" == full && "$status" -ne 2 ]]; then
  publish "$out"
fi
exit "$status"
