# The two set-up commands: `make demo` and `make test`. Both create the environment themselves.
VENV      ?= .venv
PY        := $(VENV)/bin/python
PYLIBDIR  := $(shell python3 -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")
STAMP     := $(VENV)/.installed
SOURCES   := $(shell find rust -name '*.rs') Cargo.toml pyproject.toml

export PYO3_PYTHON := $(abspath $(PY))
# Rust unit tests embed CPython; the interpreter's shared library lives here.
export LD_LIBRARY_PATH := $(PYLIBDIR):$(LD_LIBRARY_PATH)

.PHONY: demo test build lint rust-test py-test bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'maturin>=1.7,<2'

# Build the extension in release mode and install the package with its dev extras.
$(STAMP): $(PY) $(SOURCES)
	$(VENV)/bin/maturin develop --release --extras dev
	touch $(STAMP)

build: $(STAMP)

## Generate the Toyama demo registry if none, open it, answer a sample request.
demo: build
	$(VENV)/bin/juki demo

lint: build
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benches protos
	$(VENV)/bin/ruff format --check python tests benches protos
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest juki_engine._core --mypy-config-file pyproject.toml

rust-test: build
	cargo test --release

py-test: build
	$(PY) -m pytest -q

## The whole suite: lints, Rust unit tests, Python tests.
test: lint rust-test py-test

bench: build
	$(PY) benches/bench_verify.py

clean:
	rm -rf $(VENV) target
