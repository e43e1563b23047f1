#!/usr/bin/env bash
# The TypeScript client's tasks (clients/typescript), as the Makefile calls them:
#
#   tsclient.sh test        npm ci (when the lock changed), typecheck, prettier, eslint, unit
#   tsclient.sh e2e         headless Chromium and Node against wse-server (WSE_SERVER),
#                           and Node against the published wse-server 2.5.1 (.venv/wse25)
#   tsclient.sh demo        the live dashboard (wse-server, a publisher, the page)
#   tsclient.sh screenshot  regenerate clients/typescript/docs/demo.png
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../clients/typescript"

main() {
  check_node
  install
  case "${1:-}" in
    test)
      npm run --silent typecheck
      npx prettier --check --log-level warn .
      npm run --silent lint
      npx vitest run
      ;;
    e2e)
      WSE25_PYTHON="${WSE25_PYTHON:-$PWD/../../.venv/wse25/bin/python}" \
        npx vitest run --config vitest.e2e.config.ts
      ;;
    demo) node demo/serve.mjs ;;
    screenshot) node demo/serve.mjs --screenshot docs/demo.png ;;
    *)
      echo "usage: $0 test|e2e|demo|screenshot" >&2
      exit 2
      ;;
  esac
}

check_node() {
  local major
  major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
  if ((major < 20)); then
    echo "tsclient: Node.js 20 or newer is needed (found: ${major})" >&2
    exit 1
  fi
}

# npm ci, skipped while node_modules matches package-lock.json.
install() {
  local stamp=node_modules/.package-lock.sha256 want
  want="$(sha256sum package-lock.json | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
}

main "$@"
