#!/usr/bin/env bash
# Create the Python client's venvs and install clients/python into them. Idempotent:
# does nothing when a venv already matches its requirements and the client's pyproject.
#
#   setup-pyclient.sh main     .venv/pyclient, Python 3.11: tests, coverage, ruff, mypy
#   setup-pyclient.sh compat   .venv/pyclient-compat, Python 3.12 (pyenv): wse-server 2.5.1
#
# PYCLIENT_PYTHON and PYCLIENT_COMPAT_PYTHON override the interpreters.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-main}" in
main)
  venv=.venv/pyclient
  requirements=scripts/requirements-pyclient.txt
  python="${PYCLIENT_PYTHON:-python3.11}"
  editable=(-e)
  ;;
compat)
  venv=.venv/pyclient-compat
  requirements=scripts/requirements-pyclient-compat.txt
  python="${PYCLIENT_COMPAT_PYTHON:-$HOME/.pyenv/versions/3.12.1/bin/python3.12}"
  editable=()
  ;;
*)
  echo "usage: setup-pyclient.sh main|compat" >&2
  exit 2
  ;;
esac

command -v "$python" >/dev/null || {
  echo "setup-pyclient: no interpreter $python" >&2
  exit 1
}
stamp="$venv/.requirements.sha256"
want="$(cat "$requirements" clients/python/pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

rm -rf "$venv"
"$python" -m venv "$venv"
echo "setup-pyclient: installing $requirements into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-build-isolation --no-deps "${editable[@]}" ./clients/python
echo "$want" >"$stamp"
