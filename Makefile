# policy-values developer tasks. `make` (or `make help`) lists them.
#
# Databases come from scripts/dev-db.sh: $DATABASE_URL's server if set, else
# the server on 127.0.0.1:5432, else a project-local cluster in .pgdata/.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

CARGO ?= cargo
DEV_DB := ./scripts/dev-db.sh
SQLX_CLI_VERSION := 0.8.6
# Extra arguments for the test runner, e.g. `make test TEST_ARGS=resolve`.
TEST_ARGS ?=

# The binary, built as `make test` builds it, so that neither recompiles after
# the other. Selecting a test target is what makes it so: with Cargo's
# resolver 2, the dev-dependencies (proptest, criterion) add features to
# shared dependencies (regex-syntax, regex-automata, either, bitflags, ...)
# only when a test target is built, and those features change the hash of
# about 28 units, sqlx, tower-http, tracing-subscriber and policy_values
# among them. tests/cli.rs, which drives the binary, is the cheapest target to
# select; --all-features matches `make test`.
BUILD := SQLX_OFFLINE=true $(CARGO) build --all-features --bin policy-values --test cli

# Shell expressions, expanded inside recipes.
BIN := "$${CARGO_TARGET_DIR:-target}/debug/policy-values"
ADDR := $${POLICY_VALUES_ADDR:-127.0.0.1:8080}

.PHONY: help run build install test lint doc sqlx-check prepare sqlx-cli fmt migrate seed bench db-url db-stop

help:
	@echo "policy-values make targets:"
	@echo "  run         dev database + migrate + seed + admin token, then serve"
	@echo "  build       build the binary as make test does, so neither recompiles after the other"
	@echo "  install     put that binary on the PATH as policy-values (in \$$CARGO_HOME/bin, ~/.cargo/bin)"
	@echo "  test        run the test suite and the doc tests against database policy_values_test"
	@echo "  lint        rustfmt check, clippy (all features / no default features / openfeature alone / http-source alone), doc, sqlx-check"
	@echo "  doc         cargo doc --no-deps --all-features, warnings as errors"
	@echo "  sqlx-check  check that .sqlx/ offline query data is up to date"
	@echo "  prepare     regenerate .sqlx/ offline query data"
	@echo "  fmt         cargo fmt --all"
	@echo "  migrate     apply migrations to the dev database (policy_values)"
	@echo "  seed        load seed data into the dev database"
	@echo "  bench       cargo bench against database policy_values_bench"
	@echo "  schemathesis  fuzz the running server against its OpenAPI document"
	@echo "  metrics-check  lint a live /metrics page with promtool (installs Debian's prometheus package if needed)"
	@echo "  db-url      print the dev database URL"
	@echo "  db-stop     stop the project-local PostgreSQL cluster (.pgdata/), if any"

build:
	$(BUILD)

# The development binary (the one `make run` serves with) on the PATH, for
# the CLI's commands: copied into Cargo's bin directory, which rustup puts on
# the PATH. (`cargo install --path . --locked` builds a release binary
# instead, from scratch.)
install: build
	@DEST="$${CARGO_INSTALL_ROOT:-$${CARGO_HOME:-$$HOME/.cargo}}/bin"
	mkdir -p "$$DEST"
	install -m 0755 $(BIN) "$$DEST/policy-values"
	echo "installed $$DEST/policy-values"
	if [[ "$$(command -v policy-values)" != "$$DEST/policy-values" ]]; then
		echo "warning: $$DEST is not first on your PATH; add it (export PATH=\"$$DEST:\$$PATH\") or run $$DEST/policy-values" >&2
	fi

run:
	@URL=$$($(DEV_DB) policy_values)
	echo "==> $(BUILD)" >&2
	$(BUILD)
	export DATABASE_URL="$$URL"
	# Migrated before the token is created; serve then syncs the catalog.
	echo "==> policy-values migrate" >&2
	$(BIN) migrate
	echo "==> policy-values token create --role admin --name dev-admin" >&2
	TOKEN=$$($(BIN) token create --role admin --name dev-admin | tail -n 1)
	if [[ -z "$$TOKEN" ]]; then echo "error: token create printed no token" >&2; exit 1; fi
	mkdir -p .dev
	(umask 077 && printf '%s\n' "$$TOKEN" > .dev/admin-token)
	chmod 600 .dev/admin-token
	ADDR="$(ADDR)"
	echo
	echo "=================================================================="
	echo " policy-values dev server"
	echo "   database : $$URL"
	echo "   listening: http://$$ADDR"
	echo "   console  : http://$$ADDR/console (sign in with the admin token)"
	echo "   admin token (also in .dev/admin-token); paste into another shell:"
	echo
	echo "TOKEN=$$TOKEN"
	echo
	echo " try:"
	echo "   curl -s -H \"Authorization: Bearer $$TOKEN\" \"http://$$ADDR/api/v1/policy-values/resolve?key=allocation.refund_window_days&org_id=acme\""
	echo "=================================================================="
	echo
	exec $(BIN) serve --skip-migrate

test:
	@scripts/browser.sh
	URL=$$($(DEV_DB) policy_values_test)
	if $(CARGO) nextest --version >/dev/null 2>&1; then
		echo "==> DATABASE_URL=$$URL SQLX_OFFLINE=true $(CARGO) nextest run --all-features --no-fail-fast $(TEST_ARGS)" >&2
		DATABASE_URL="$$URL" SQLX_OFFLINE=true $(CARGO) nextest run --all-features --no-fail-fast $(TEST_ARGS)
	else
		echo "==> (cargo-nextest not found) DATABASE_URL=$$URL SQLX_OFFLINE=true $(CARGO) test --all-features $(TEST_ARGS)" >&2
		DATABASE_URL="$$URL" SQLX_OFFLINE=true $(CARGO) test --all-features $(TEST_ARGS)
	fi
	# nextest does not run doc tests; the examples in the rustdoc are tests too.
	if $(CARGO) nextest --version >/dev/null 2>&1; then
		echo "==> DATABASE_URL=$$URL SQLX_OFFLINE=true $(CARGO) test --doc --all-features" >&2
		DATABASE_URL="$$URL" SQLX_OFFLINE=true $(CARGO) test --doc --all-features
	fi

lint:
	@echo "==> $(CARGO) fmt --all -- --check" >&2
	$(CARGO) fmt --all -- --check
	echo "==> SQLX_OFFLINE=true $(CARGO) clippy --all-targets --all-features -- -D warnings" >&2
	SQLX_OFFLINE=true $(CARGO) clippy --all-targets --all-features -- -D warnings
	echo "==> SQLX_OFFLINE=true $(CARGO) clippy --no-default-features --lib -- -D warnings" >&2
	SQLX_OFFLINE=true $(CARGO) clippy --no-default-features --lib -- -D warnings
	# The OpenFeature provider builds for a service, without the server.
	echo "==> SQLX_OFFLINE=true $(CARGO) clippy --no-default-features --features openfeature,db-source --lib -- -D warnings" >&2
	SQLX_OFFLINE=true $(CARGO) clippy --no-default-features --features openfeature,db-source --lib -- -D warnings
	# A fleet's client follows the servers: no sqlx, axum or CLI compiled.
	echo "==> SQLX_OFFLINE=true $(CARGO) clippy --no-default-features --features http-source --lib -- -D warnings" >&2
	SQLX_OFFLINE=true $(CARGO) clippy --no-default-features --features http-source --lib -- -D warnings
	if $(CARGO) tree --no-default-features --features http-source -e normal --prefix none | grep -E '^(sqlx|axum|clap) '; then
		echo "error: the http-source client pulls in the crates above" >&2; exit 1
	fi
	$(MAKE) doc
	echo "==> make sqlx-check" >&2
	$(MAKE) sqlx-check

# The rustdoc, as a user of the crate reads it: a broken link or a bad code
# block fails. (The examples in it run as doc tests in `make test`.)
doc:
	@echo "==> RUSTDOCFLAGS='-D warnings' SQLX_OFFLINE=true $(CARGO) doc --no-deps --all-features" >&2
	RUSTDOCFLAGS='-D warnings' SQLX_OFFLINE=true $(CARGO) doc --no-deps --all-features

# Installs sqlx-cli if `cargo sqlx` is missing.
sqlx-cli:
	@if ! $(CARGO) sqlx --version >/dev/null 2>&1; then
		echo "==> $(CARGO) install sqlx-cli@$(SQLX_CLI_VERSION) --no-default-features --features postgres,rustls --locked" >&2
		$(CARGO) install sqlx-cli@$(SQLX_CLI_VERSION) --no-default-features --features postgres,rustls --locked
	fi
	$(CARGO) sqlx --version

# $(call sqlx-prepare,<extra prepare flags>): migrate a scratch database, then
# run `cargo sqlx prepare` against it. If the scratch database's migration
# history no longer matches migrations/ (edited during development), it is
# reset and migrated from scratch.
define sqlx-prepare
@URL=$$($(DEV_DB) policy_values_prepare)
unset SQLX_OFFLINE
export DATABASE_URL="$$URL"
echo "==> DATABASE_URL=$$URL $(CARGO) sqlx migrate run --source migrations" >&2
if ! $(CARGO) sqlx migrate run --source migrations; then
	echo "==> migrate run failed; resetting scratch database policy_values_prepare" >&2
	$(CARGO) sqlx database reset -y --source migrations
fi
echo "==> $(CARGO) sqlx prepare $(1) -- --all-targets --all-features" >&2
$(CARGO) sqlx prepare $(1) -- --all-targets --all-features
endef

sqlx-check: sqlx-cli
	$(call sqlx-prepare,--check)

prepare: sqlx-cli
	$(call sqlx-prepare,)

fmt:
	$(CARGO) fmt --all

migrate: build
	@URL=$$($(DEV_DB) policy_values)
	DATABASE_URL="$$URL" $(BIN) migrate

seed: build
	@URL=$$($(DEV_DB) policy_values)
	DATABASE_URL="$$URL" $(BIN) seed

bench:
	@URL=$$($(DEV_DB) policy_values_bench)
	# http-source: the HTTP client's cold start in benches/replica_load.rs.
	echo "==> DATABASE_URL=$$URL SQLX_OFFLINE=true $(CARGO) bench --features http-source" >&2
	DATABASE_URL="$$URL" SQLX_OFFLINE=true $(CARGO) bench --features http-source
	LOAD_URL=$$($(DEV_DB) policy_values_load)
	echo "==> DATABASE_URL=$$LOAD_URL scripts/bench-load.sh" >&2
	DATABASE_URL="$$LOAD_URL" scripts/bench-load.sh

db-url:
	@$(DEV_DB) policy_values

db-stop:
	@$(DEV_DB) --stop

# Each recipe runs as one bash script (so URL=... carries over lines); with
# -e and pipefail, any failing line fails the target.
.ONESHELL:

# Fuzz the running server against its own OpenAPI document: any 5xx or any
# response that breaks the schema fails. Schemathesis comes from PyPI into a
# virtualenv under .dev/. Each run starts from a fresh database and is
# seeded, so that it repeats the one before; .config/schemathesis.toml gives
# the two admin tokens (approvals need another admin than the author) and
# future times for half the writes. SCHEMATHESIS_ARGS adds options, e.g.
# `make schemathesis SCHEMATHESIS_ARGS="--phases stateful --report har"`.
# What it covers: docs/api.md#make-schemathesis.
SCHEMATHESIS_VERSION := 4.32.5
SCHEMATHESIS_ADDR := 127.0.0.1:18089
SCHEMATHESIS_ARGS ?=

.PHONY: schemathesis
schemathesis: build
	@$(DEV_DB) --drop policy_values_schemathesis
	URL=$$($(DEV_DB) policy_values_schemathesis)
	VENV=.dev/schemathesis-venv
	if ! "$$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$(SCHEMATHESIS_VERSION)"; then
		echo "==> installing schemathesis $(SCHEMATHESIS_VERSION) from PyPI" >&2
		python3 -m venv "$$VENV"
		"$$VENV/bin/pip" install -q "schemathesis==$(SCHEMATHESIS_VERSION)"
	fi
	export DATABASE_URL="$$URL"
	$(BIN) migrate >/dev/null
	SCHEMATHESIS_TOKEN=$$($(BIN) token create --role admin --name schemathesis | tail -n 1)
	SCHEMATHESIS_APPROVER_TOKEN=$$($(BIN) token create --role admin --name schemathesis-approver | tail -n 1)
	export SCHEMATHESIS_TOKEN SCHEMATHESIS_APPROVER_TOKEN
	POLICY_VALUES_ADDR=$(SCHEMATHESIS_ADDR) POLICY_VALUES_WRITE_RATE=100000 POLICY_VALUES_WRITE_BURST=100000 \
		$(BIN) serve --skip-migrate > .dev/schemathesis-server.log 2>&1 &
	SERVER=$$!
	trap 'kill $$SERVER 2>/dev/null || true; for t in schemathesis schemathesis-approver; do $(BIN) token revoke $$t >/dev/null 2>&1 || true; done' EXIT
	for _ in $$(seq 1 100); do curl -fs http://$(SCHEMATHESIS_ADDR)/readyz >/dev/null && break; sleep 0.1; done
	echo "==> schemathesis run http://$(SCHEMATHESIS_ADDR)/api/v1/openapi.json" >&2
	"$$VENV/bin/schemathesis" --config-file .config/schemathesis.toml run http://$(SCHEMATHESIS_ADDR)/api/v1/openapi.json \
		--checks not_a_server_error,response_schema_conformance \
		--max-examples 50 --seed 1 --no-color $(SCHEMATHESIS_ARGS)

# Lint a live /metrics page with promtool (Debian's `prometheus` package,
# installed with apt-get when missing): every metric has # HELP and # TYPE,
# names and units follow Prometheus' conventions. The server is started on
# its own database and port, and driven once (a write, a refusal, reads) so
# that the page shows the metrics, not an empty text.
METRICS_ADDR := 127.0.0.1:18090

.PHONY: metrics-check
metrics-check: build
	@if ! command -v promtool >/dev/null; then
		SUDO=""; [[ $$(id -u) == 0 ]] || SUDO=sudo
		echo "==> installing promtool: apt-get install prometheus" >&2
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >&2
	fi
	promtool --version | sed -n 1p
	URL=$$($(DEV_DB) policy_values_metrics)
	export DATABASE_URL="$$URL"
	$(BIN) migrate >/dev/null
	TOKEN=$$($(BIN) token create --role admin --name metrics-check | tail -n 1)
	mkdir -p .dev
	POLICY_VALUES_ADDR=$(METRICS_ADDR) $(BIN) serve --skip-migrate > .dev/metrics-check-server.log 2>&1 &
	SERVER=$$!
	trap 'kill $$SERVER 2>/dev/null || true; $(BIN) token revoke metrics-check >/dev/null 2>&1 || true' EXIT
	for _ in $$(seq 1 100); do curl -fs http://$(METRICS_ADDR)/readyz >/dev/null && break; sleep 0.1; done
	API=http://$(METRICS_ADDR)/api/v1
	AUTH="Authorization: Bearer $$TOKEN"
	curl -fs -H "$$AUTH" "$$API/policy-keys" >/dev/null
	curl -fs -H "$$AUTH" "$$API/replica" >/dev/null
	curl -fs -H "$$AUTH" "$$API/policy-values/resolve?key=maas.enabled" >/dev/null
	# A write that may be refused (a second run finds it made): either way it is counted.
	curl -s -o /dev/null -H "$$AUTH" -H 'Content-Type: application/json' -X POST "$$API/admin/policy-values" \
		-d '{"key": "maas.enabled", "scope": {"plan": "metrics-check"}, "value": true, "reason": "make metrics-check", "old_value": false}'
	curl -fs http://$(METRICS_ADDR)/metrics > .dev/metrics-check.txt
	echo "==> promtool check metrics < .dev/metrics-check.txt ($$(grep -c '^# HELP' .dev/metrics-check.txt) metrics with # HELP)" >&2
	promtool check metrics < .dev/metrics-check.txt
	echo "promtool check metrics: OK"
