#!/usr/bin/env bash
# Create .venv-bench (CPython 3.12) with the pinned Python peers of loadbench from
# scripts/requirements-bench.txt. The interpreter is $PYTHON312, else pyenv's newest 3.12,
# else python3.12 on PATH. Idempotent: does nothing when the venv matches the file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv-bench
requirements=scripts/requirements-bench.txt

find_python() {
  if [[ -n "${PYTHON312:-}" ]]; then
    echo "$PYTHON312"
    return
  fi
  local candidate
  for candidate in "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    [[ -x "$candidate" ]] && found="$candidate"
  done
  if [[ -n "${found:-}" ]]; then
    echo "$found"
  elif command -v python3.12 >/dev/null; then
    command -v python3.12
  else
    echo "setup-bench-venv: no CPython 3.12 (pyenv install 3.12, or set PYTHON312)" >&2
    exit 1
  fi
}

VENV="$venv" REQUIREMENTS="$requirements" PYTHON="$(find_python)" PYTHON_VERSION=3.12 \
  exec scripts/setup-venv.sh
