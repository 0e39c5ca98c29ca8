# SomaAgent01 - the two commands (`make run`, `make test`) and the developer targets.
# Meson + Ninja do the building; this file only sequences them.

BUILD     ?= build
SAN_BUILD ?= build-san
FUZZ_BUILD?= build-fuzz
PYTHON    ?= /usr/bin/python3
FUZZ_SECONDS ?= 1800
FUZZ_RUNS ?= 1000000

.PHONY: all deps build run test san unit e2e interop browser docs docs-check deploy-check lint bench fuzz fuzz-smoke tsan clean

all: build

deps:
	@bash scripts/deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=release >/dev/null

build: deps $(BUILD)/build.ninja
	@ninja -C $(BUILD) >/dev/null && echo "built $(BUILD)/somaagent"

run: build
	mkdir -p data
	./$(BUILD)/somaagent run --set data.dir=./data

# ---- tests: a separate ASan/UBSan build, then every suite ----
$(SAN_BUILD)/build.ninja:
	meson setup $(SAN_BUILD) --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false >/dev/null

san: deps $(SAN_BUILD)/build.ninja
	@ninja -C $(SAN_BUILD) >/dev/null && echo "built $(SAN_BUILD) (ASan+UBSan)"

unit: san
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C $(SAN_BUILD) --suite unit --print-errorlogs
	@# Criterion forks each test, so a leak report does not change the exit code: look for it
	@! grep -n "ERROR: LeakSanitizer" $(SAN_BUILD)/meson-logs/testlog.txt || (echo "unit: leaks found"; exit 1)

# the whole suite twice, on the embedded SQLite store and on a PostgreSQL the fixtures start: the
# two passes run at the same time (E2E_SERIAL=1: one after the other); either failing fails this
e2e: san
	@bash tests/e2e/run.sh $(CURDIR)/$(SAN_BUILD)/somaagent $(PYTHON)

tests/interop/node_modules/.package-lock.json: tests/interop/package.json tests/interop/package-lock.json
	cd tests/interop && npm ci --no-audit --no-fund --loglevel=error

interop: san tests/interop/node_modules/.package-lock.json
	SOMA_BIN=$(CURDIR)/$(SAN_BUILD)/somaagent node --test --test-concurrency=1 tests/interop/

# playwright-core only: it drives Debian's Chromium (scripts/deps.sh); no browser is ever downloaded
tests/browser/node_modules/.package-lock.json: tests/browser/package.json tests/browser/package-lock.json
	cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

browser: san tests/browser/node_modules/.package-lock.json
	SOMA_BIN=$(CURDIR)/$(SAN_BUILD)/somaagent BROWSER_ARTIFACTS=$(CURDIR)/$(SAN_BUILD)/browser-artifacts \
		node --test --test-concurrency=1 tests/browser/

docs-check: san
	@./$(SAN_BUILD)/somaagent config docs | diff -u docs/configuration.md - \
		|| (echo "docs/configuration.md is stale: run 'make docs'"; exit 1)
	@echo "docs/configuration.md is current"

# deploy/ (Dockerfile, compose, Kubernetes, systemd) checked against the binary: settings, runtime
# libraries, probes, SIGTERM, systemd-analyze, deploy/monitoring against promtool and real /metrics
# (seconds; the image build itself: deploy/build-local.sh)
deploy-check: san
	SOMA_BIN=$(CURDIR)/$(SAN_BUILD)/somaagent $(PYTHON) -m pytest -q -p no:cacheprovider \
		--basetemp=$$(mktemp -d) tests/deploy

docs: build
	./$(BUILD)/somaagent config docs > docs/configuration.md

lint:
	@bash scripts/lint.sh

fuzz-smoke: deps
	@bash tests/fuzz/run.sh $(FUZZ_BUILD) 10

test: deps build san lint unit docs-check deploy-check e2e interop browser fuzz-smoke
	@echo "make test: all suites passed"

# ---- longer runs, not part of `make test` ----
bench: build
	bash bench/http.sh
	bash bench/auth.sh
	bash bench/startup.sh
	bash bench/chat.sh
	bash bench/memory.sh
	ninja -C $(BUILD) queue_bench >/dev/null && bash bench/queue.sh
	bash bench/ingest_pg.sh

fuzz: deps
	bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_RUNS)

tsan: deps
	bash scripts/tsan.sh

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(FUZZ_BUILD) build-tsan
