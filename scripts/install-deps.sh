#!/usr/bin/env bash
# Install the Debian packages the test targets need. Idempotent and silent when they are
# all present; runs unattended (no stdin) as root, or through sudo otherwise.
#
#   .venv for the Python test tools (scripts/setup-venv.sh): python3-venv
#   the linker for cargo, and wsaccel's C build for wstest: gcc, libc6-dev
#   `make lint-scripts`: shellcheck
#   the scale-out tests (issue #6) start their own Redis: redis-server
#   the TypeScript client's browser test and demo screenshot (headless, through
#   playwright-core; no browser download): chromium, and fonts-dejavu-core for page text
#   (also the text of loadbench's PNG charts, read at run time by ab_glyph)
#   (Node 20 and npm come with the machine image; the tsclient targets check the version.)
#   a command-line client for manual checks, when apt has it: websocat
set -euo pipefail

packages=(python3-venv gcc libc6-dev shellcheck redis-server chromium fonts-dejavu-core)
optional=(websocat)

main() {
  local missing=() pkg
  for pkg in "${packages[@]}"; do
    installed "$pkg" || missing+=("$pkg")
  done
  for pkg in "${optional[@]}"; do
    installed "$pkg" || ! known "$pkg" || missing+=("$pkg")
  done
  ((${#missing[@]} > 0)) || return 0

  # Refresh the package lists only when one of the wanted packages is unknown to them.
  for pkg in "${missing[@]}"; do
    known "$pkg" || {
      as_root apt-get update -qq
      break
    }
  done
  echo "install-deps: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
}

installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# True when the package lists offer an installable version of the package.
known() {
  local candidate
  candidate="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }')"
  [[ -n "$candidate" && "$candidate" != "(none)" ]]
}

as_root() {
  if ((EUID == 0)); then
    "$@"
  else
    sudo -n "$@"
  fi
}

main
