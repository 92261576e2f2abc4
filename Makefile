# The two commands: `make demo` and `make test`. See README.md.
CARGO ?= cargo

.PHONY: demo test ci lint check-configs bench setup-demo setup-test

demo: setup-demo
	$(CARGO) run --release -p flashgate -- demo

test: setup-test
	$(CARGO) test --workspace --all-targets
	$(MAKE) --no-print-directory check-configs

# What CI runs (.ci/run): formatting, lints, the test command, and every shipped config.
ci: lint test

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@python3 scripts/module-cycles.py proxy/src > /dev/null || python3 scripts/module-cycles.py proxy/src

# The example configs read secrets from the environment; check them with placeholder values.
# The monitoring files must parse and use only metrics the binary exports.
check-configs:
	FLASHGATE_KEY_1=example-key-one-example-key-one-0123456789 \
	FLASHGATE_KEY_2=example-key-two-example-key-two-0123456789 \
	FLASHGATE_ADMIN_TOKEN=example-admin-token-0123 \
	$(CARGO) run -q -p flashgate -- check config/*.toml config/monitoring/*

bench: setup-demo
	$(CARGO) bench -p waitroom --bench core

setup-demo:
	@scripts/setup.sh demo

setup-test:
	@scripts/setup.sh test
