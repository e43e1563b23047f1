#!/usr/bin/env bash
# Fail when a tracked *.rs line is wider than 100 columns. rustfmt keeps code within
# max_width but leaves comments and string literals as written, so this catches those.
# Prints file:line: width for each offender.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

max_width=100

# perl decodes UTF-8 (-CSD) so that widths count characters, not bytes.
# shellcheck disable=SC2016 # the single-quoted text is perl, expanded by perl
git ls-files -z -- '*.rs' | xargs -0 --no-run-if-empty perl -CSD -ne '
  BEGIN { $max = shift @ARGV; $bad = 0 }
  s/\r?\n\z//;
  if (length($_) > $max) {
    printf "%s:%d: %d columns\n", $ARGV, $., length($_);
    $bad = 1;
  }
  close ARGV if eof;
  END { exit $bad }
' "$max_width" || {
  echo "check-comment-width: the lines above are over $max_width columns" >&2
  exit 1
}
