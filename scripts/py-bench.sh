#!/usr/bin/env bash
# The drain benchmark (py/bench): our wse_server against wse-server 2.5.1 from PyPI, both
# under CPython 3.12 in venvs of their own (the 2.5.1 wheel is cp312 abi3 and both
# packages are named wse_server). Needs the wheel `make py-build` leaves in target/wheels.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python312="${PYTHON312:-$HOME/.pyenv/versions/3.12.1/bin/python3.12}"
wheels="${CARGO_TARGET_DIR:-target}/wheels"
ours=.venv/bench-ours
theirs=.venv/bench-theirs
orjson="$(grep -E '^orjson==' scripts/requirements-dev.txt)"

if [[ ! -x "$python312" ]]; then
  echo "py-bench: CPython 3.12 not found at $python312 (set PYTHON312)" >&2
  exit 2
fi
shopt -s nullglob
built=("$wheels"/wse_server-*.whl)
if [[ ${#built[@]} -ne 1 ]]; then
  echo "py-bench: expected one wheel in $wheels (run make py-build), found ${#built[@]}" >&2
  exit 2
fi
wheel="${built[0]}"
for venv in "$ours" "$theirs"; do
  [[ -x "$venv/bin/python" ]] || "$python312" -m venv "$venv"
done
pip=(--quiet --disable-pip-version-check)
"$ours/bin/python" -m pip install "${pip[@]}" --force-reinstall --no-deps "$wheel"
"$ours/bin/python" -m pip install "${pip[@]}" "$orjson"
"$theirs/bin/python" -m pip install "${pip[@]}" wse-server==2.5.1

.venv/bin/python py/bench/drain_bench.py \
  --ours "$ours/bin/python" --theirs "$theirs/bin/python" "$@"
