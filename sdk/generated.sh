# Sourced by each SDK's generate.sh. install_generated FRESH DEST SCRIPT MODE:
# with MODE --check, fails when the committed stubs in DEST differ from the
# FRESH ones (a stale stub is a bug); otherwise replaces DEST with FRESH.
install_generated() {
  local fresh=$1 dest=$2 script=$3 mode=${4:-}
  if [ "$mode" = "--check" ]; then
    if ! diff -r "$fresh" "$dest" >/dev/null; then
      echo "${dest#"$root"/} is stale: run $script and commit the result" >&2
      diff -r "$fresh" "$dest" | head -20 >&2
      return 1
    fi
    return 0
  fi
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  cp -r "$fresh" "$dest"
}
