#!/usr/bin/env bash
# Create .venv/wstest, a Python 2.7 virtualenv holding the reference Autobahn `wstest`,
# from the pins in scripts/requirements-wstest.txt. Idempotent.
#
# WSTEST_PYTHON names the Python 2.7 interpreter (default: pyenv's 2.7.18).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv/wstest
requirements=scripts/requirements-wstest.txt
stamp="$venv/.requirements.sha256"
python="${WSTEST_PYTHON:-$HOME/.pyenv/versions/2.7.18/bin/python}"
# The last virtualenv line that still creates Python 2.7 environments.
virtualenv_pin='virtualenv==20.15.1'

[[ -x "$python" ]] || {
  echo "setup-wstest: no Python 2.7 at $python (set WSTEST_PYTHON)" >&2
  exit 1
}

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

# Python 2.7 has no venv module; virtualenv goes into that interpreter's user site.
if ! "$python" -m virtualenv --version >/dev/null 2>&1; then
  "$python" -m pip install --quiet --user --disable-pip-version-check "$virtualenv_pin"
fi
rm -rf "$venv"
"$python" -m virtualenv --quiet "$venv"

echo "setup-wstest: installing $requirements into $venv"
# --no-deps: the file pins the whole tree, so pip must not pull anything newer.
PYTHONWARNINGS=ignore "$venv/bin/pip" install --quiet --disable-pip-version-check \
  --no-python-version-warning --no-deps -r "$requirements"
"$venv/bin/wstest" --autobahnversion >/dev/null
echo "$want" >"$stamp"
