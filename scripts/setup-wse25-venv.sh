#!/usr/bin/env bash
# Create .venv/wse25 (CPython 3.12) holding the published wse-server 2.5.1 from the pin in
# scripts/requirements-wse25.txt. Idempotent.
#
# WSE25_BASE_PYTHON names the CPython 3.12 interpreter (default: pyenv's 3.12.1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv/wse25
requirements=scripts/requirements-wse25.txt
stamp="$venv/.requirements.sha256"
python="${WSE25_BASE_PYTHON:-$HOME/.pyenv/versions/3.12.1/bin/python3.12}"

[[ -x "$python" ]] || {
  echo "setup-wse25-venv: no CPython 3.12 at $python (set WSE25_BASE_PYTHON)" >&2
  exit 1
}

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
rm -rf "$venv"
"$python" -m venv "$venv"
echo "setup-wse25-venv: installing $requirements into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
"$venv/bin/python" -c 'import wse_server._wse_accel'
echo "$want" >"$stamp"
