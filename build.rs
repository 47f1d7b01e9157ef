//! Links libpython into the unit-test harness, and into nothing else.
//!
//! `make` builds the extension and the Rust checks with one set of PyO3 settings, so that
//! `cargo test` reuses the dependencies the extension build compiled (Makefile). Those settings
//! include `PYO3_BUILD_EXTENSION_MODULE`, under which PyO3 links no libpython: right for the
//! extension, which the interpreter loads, but the unit tests embed CPython (rust/error.rs). The
//! Makefile names the library in `JUKI_TEST_LIBPYTHON` and `JUKI_TEST_LIBPYTHON_DIR` for
//! `cargo clippy` and `cargo test` only; the extension build leaves them unset.

use std::env;

fn main() {
    println!("cargo:rerun-if-env-changed=JUKI_TEST_LIBPYTHON");
    println!("cargo:rerun-if-env-changed=JUKI_TEST_LIBPYTHON_DIR");
    let (Some(name), Some(dir)) = (
        env::var_os("JUKI_TEST_LIBPYTHON"),
        env::var_os("JUKI_TEST_LIBPYTHON_DIR"),
    ) else {
        return;
    };
    let (name, dir) = (name.to_string_lossy(), dir.to_string_lossy());
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-lib={name}");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
}
