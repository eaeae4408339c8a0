# pgbus: two commands set everything up on a fresh machine.
#   make run    install what is missing, build, start a throwaway Postgres
#               under ./var/ (unless PGBUS_DATABASE_URL is set), migrate, serve
#   make test   the same installs and build, then every test
# Also: make build, make lint, make bench, make fuzz, make clean.

BUILD_DIR ?= build
JOBS ?= 2
export PATH := $(CURDIR)/.tools/bin:$(PATH)

FUZZ_SECONDS ?= 600

.PHONY: all deps build lint run test test-unit bench fuzz clean

all: build

deps:
	@bash scripts/deps.sh

$(BUILD_DIR)/build.ninja:
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: deps $(BUILD_DIR)/build.ninja
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# buf breaking compares the protos with the last released API, the buf
# image proto/released/pgbus-v1.json (v1 as of issue 13; replace it with
# `buf build -o proto/released/pgbus-v1.json` only when a release is cut).
lint: deps
	buf lint
	buf breaking --against proto/released/pgbus-v1.json

run: build
	@bash scripts/run.sh $(BUILD_DIR)

test: build lint
	@bash scripts/ctest.sh $(BUILD_DIR) --output-on-failure --timeout 900 -j $(JOBS)
	@echo "fuzz: request decoding and validation, 20 s (make fuzz runs $(FUZZ_SECONDS) s)"
	@bash scripts/fuzz.sh $(BUILD_DIR) 20

test-unit: build
	@bash scripts/ctest.sh $(BUILD_DIR) --output-on-failure -L unit

bench: build
	@bash scripts/bench.sh $(BUILD_DIR)

fuzz: deps
	@bash scripts/fuzz.sh $(BUILD_DIR) $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD_DIR)
