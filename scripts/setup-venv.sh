#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the pinned tools from scripts/requirements-dev.txt.
# Idempotent: does nothing when the venv already matches the requirements file.
# Other venvs reuse it: VENV, REQUIREMENTS, PYTHON and PYTHON_VERSION (as `3.12`) override
# the defaults (scripts/setup-bench-venv.sh does).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="${VENV:-.venv}"
requirements="${REQUIREMENTS:-scripts/requirements-dev.txt}"
stamp="$venv/.requirements.sha256"
version="${PYTHON_VERSION:-3.11}"
python="${PYTHON:-python$version}"

# A venv left by another interpreter version is rebuilt rather than patched.
if [[ -x "$venv/bin/python" ]] &&
  ! "$venv/bin/python" -c "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$version')"; then
  echo "setup-venv: $venv is not Python $version, recreating it"
  rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "setup-venv: installing $requirements into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
echo "$want" >"$stamp"
