//! juki_engine core: the national identity index (本人確認情報) over Apache Arrow columns.
//!
//! Modules by subject: `ids` (identifiers and check digits), `storage` (columns and the public
//! schema), `index` (hash indexes), `query` (lookup and verify kernels), `normalize` (the match
//! levels of names and readings), `search` (the 4情報 index), `generate` (synthetic registry), `import` (building from an
//! Arrow table), `snapshot` (save/open), `changes` (change records checked and applied), `history` (the
//! living registry's versions and as-of reads), `log` (the durable change log), `memory` (huge-page allocation and prefetch), `error`
//! (the error type and its Python mapping), `wire` (the trust boundary: IPC decoding with caps,
//! validation of every array from outside), `python` (bindings).

pub mod changes;
pub mod error;
pub mod feed;
pub mod generate;
pub mod history;
pub mod ids;
pub mod import;
pub mod index;
pub mod log;
pub mod memory;
pub mod normalize;
pub mod notices;
pub mod python;
pub mod query;
pub mod route;
pub mod search;
pub mod snapshot;
pub mod storage;
pub mod wire;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    python::register(m)
}
