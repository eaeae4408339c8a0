#!/usr/bin/env bash
# Builds the libFuzzer target with clang into BUILD/fuzz and runs it for
# SECONDS (default 20: the smoke run of `make test`; `make fuzz` runs it
# longer). The corpus grows in BUILD/fuzz/corpus; a crash leaves its input
# in BUILD/fuzz/ and fails the run.
set -euo pipefail
build=$(realpath -m "${1:-build}")
seconds=${2:-20}
cd "$(dirname "$0")/.."
out="$build/fuzz"
cmake -S fuzz -B "$out" -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$out" -j2 >"$out/build.log" 2>&1 || { tail -30 "$out/build.log" >&2; exit 1; }
mkdir -p "$out/corpus"
cd "$out"
./request_fuzzer -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 corpus 2>fuzz.log || { tail -40 fuzz.log >&2; exit 1; }
grep -E "^stat::number_of_executed_units|^stat::new_units_added" fuzz.log >&2
