# The two set-up commands: `make demo` and `make test`. Both create the environment themselves.
VENV      ?= .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
SOURCES   := $(shell find rust -name '*.rs') build.rs Cargo.toml pyproject.toml

# One Rust build serves the extension and the Rust checks: maturin, `cargo clippy` and `cargo test`
# run with the same profile, features and PyO3 settings, so the checks reuse the dependencies the
# extension build compiled. maturin uses PYO3_CONFIG_FILE when one is given, and sets
# PYO3_BUILD_EXTENSION_MODULE itself (≥ 1.9.4); these exports give cargo the same.
export PYO3_PYTHON := $(abspath $(PY))
export PYO3_CONFIG_FILE := $(abspath target/pyo3-config.txt)
export PYO3_BUILD_EXTENSION_MODULE := 1
# The Rust unit tests embed CPython: build.rs links their harness, and only it, to libpython.
# clippy gets the same, so that neither rebuilds the crate after the other.
RUST_TEST_ENV := $(shell python3 -c "import sysconfig as s; print('JUKI_TEST_LIBPYTHON_DIR=' + s.get_config_var('LIBDIR'), 'JUKI_TEST_LIBPYTHON=python' + s.get_config_var('LDVERSION'))")

.PHONY: demo test build lint rust-test py-test bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'maturin>=1.9.4,<2'

# PyO3's view of the interpreter; without it maturin writes its own and cargo would not see it.
$(PYO3_CONFIG_FILE): $(PY)
	mkdir -p $(@D)
	$(PY) -c "import platform, sys; print('implementation=' + platform.python_implementation()); print('version=%d.%d' % sys.version_info[:2])" > $@

# Build the extension in release mode and install the package with its dev extras.
$(STAMP): $(PY) $(PYO3_CONFIG_FILE) $(SOURCES)
	$(VENV)/bin/maturin develop --release --extras dev
	touch $(STAMP)

build: $(STAMP)

## Generate the Toyama demo registry if none, open it, answer a sample request.
demo: build
	$(VENV)/bin/juki demo

lint: build
	cargo fmt --check
	$(RUST_TEST_ENV) cargo clippy --release --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benches protos
	$(VENV)/bin/ruff format --check python tests benches protos
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest juki_engine._core --mypy-config-file pyproject.toml

rust-test: build
	$(RUST_TEST_ENV) cargo test --release

py-test: build
	$(PY) -m pytest -q

## The whole suite: lints, Rust unit tests, Python tests.
test: lint rust-test py-test

bench: build
	$(PY) benches/bench_verify.py

clean:
	rm -rf $(VENV) target
