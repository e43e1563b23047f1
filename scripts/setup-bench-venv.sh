#!/usr/bin/env bash
# Create .venv-bench (CPython 3.12) with the pinned Python peers of loadbench from
# scripts/requirements-bench.txt. The interpreter is $PYTHON312, else pyenv's newest 3.12,
# else python3.12 on PATH. Idempotent: does nothing when the venv matches the file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv-bench
requirements=scripts/requirements-bench.txt
stamp="$venv/.requirements.sha256"

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

if [[ -x "$venv/bin/python" ]] &&
  ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  echo "setup-bench-venv: $venv is not Python 3.12, recreating it"
  rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
  "$(find_python)" -m venv "$venv"
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "setup-bench-venv: installing $requirements into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
echo "$want" >"$stamp"
