#!/usr/bin/env bash
# The container image, without a container daemon: the Dockerfile passes
# hadolint; its runtime stage installs exactly the Debian packages that
# hold the libraries pgbusd links (readelf NEEDED; apt brings what those
# need), beyond what debian:bookworm-slim has; its build stage installs
# only packages that scripts/deps.sh installs for `make build`.
# usage: image_test.sh BUILD_DIR
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
pgbusd="$1/pgbusd"
fail=0

"$root/.venv/bin/hadolint" "$root/Dockerfile" || { echo "hadolint failed" >&2; fail=1; }

# The packages each stage's `apt-get install` names.
stage_packages() {  # N: the Nth FROM
  awk -v n="$1" '
    /^FROM /{stage++}
    stage==n && /apt-get install/{on=1}
    stage==n && on{print; if ($0 !~ /\\$/) on=0}
  ' "$root/Dockerfile" | tr ' \\' '\n\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' |
    grep -vxE 'apt-get|install|update|rm|DEBIAN_FRONTEND=noninteractive' | sort -u
}
runtime=$(stage_packages 2)
build=$(stage_packages 1)

# libc6, libgcc-s1 and libstdc++6 are in debian:bookworm-slim (apt needs them).
needed=$(readelf -d "$pgbusd" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | while read -r lib; do
  path=$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ {print $NF; exit}')
  [ -n "$path" ] || { echo "?$lib"; continue; }
  dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1 ||
    dpkg -S "$path" | head -1 | cut -d: -f1
done | grep -vxE 'libc6|libgcc-s1|libstdc\+\+6' | sort -u)
if [ "$runtime" != "$needed" ]; then
  echo "the runtime stage installs:" $runtime >&2
  echo "pgbusd links libraries of:  " $needed >&2
  diff <(echo "$runtime") <(echo "$needed") >&2 || true
  fail=1
fi

deps=$(sed -n '/^APT_PACKAGES=(/,/^)/p' "$root/scripts/deps.sh" | tr ' ' '\n' |
  grep -E '^[a-z0-9][a-z0-9.+-]+$' | sort -u)
extra=$(comm -23 <(echo "$build") <(echo "$deps"))
if [ -n "$extra" ]; then
  echo "the build stage installs packages make build does not:" $extra >&2
  fail=1
fi
[ -n "$build" ] && [ -n "$runtime" ] || { echo "no apt-get install found in a stage" >&2; fail=1; }
exit $fail
