#!/usr/bin/env bash
# ctest, where a skipped test fails the run: no test of ours skips itself,
# but GoogleTest skips every test of a suite whose SetUpTestSuite failed,
# and the "[  SKIPPED ]" that gtest_discover_tests matches then hides the
# test binary's failing exit code (ctest counts the test as not run).
#   ctest.sh BUILD_DIR [ctest args...]
set -uo pipefail
cd "$1" || exit 1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
ctest "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if grep -q '\*\*\*Skipped' "$log"; then
  echo "ctest.sh: skipped tests count as failures here (a suite's setup failed?):" >&2
  grep '\*\*\*Skipped' "$log" >&2
  exit 1
fi
exit "$status"
