//! The crate's one error type and its single mapping to Python exceptions.
//!
//! Every fallible Rust function returns [`Result`]; the Python layer sees one exception class per
//! variant, all under `juki_engine.JukiError`, so the gRPC layer can map each class to a status.

use std::fmt;

use pyo3::PyErr;

/// Errors raised by the engine core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JukiError {
    /// An identifier (My Number, resident code, …) is malformed or has a wrong check digit.
    InvalidIdentifier(String),
    /// Input data (a table, a column, an argument) does not have the documented shape.
    InvalidInput(String),
    /// Two rows carry the same identifier.
    DuplicateIdentifier(String),
    /// A snapshot file is truncated, corrupted or missing; the message names the file.
    SnapshotCorrupt(String),
    /// An operating-system I/O failure other than corruption (permissions, disk full…).
    Io(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, JukiError>;

impl fmt::Display for JukiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JukiError::InvalidIdentifier(m)
            | JukiError::InvalidInput(m)
            | JukiError::DuplicateIdentifier(m)
            | JukiError::SnapshotCorrupt(m)
            | JukiError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for JukiError {}

impl From<arrow_schema::ArrowError> for JukiError {
    fn from(e: arrow_schema::ArrowError) -> Self {
        JukiError::InvalidInput(e.to_string())
    }
}

/// The Python exception classes, one per variant, under `juki_engine._core.JukiError`.
pub mod exceptions {
    use pyo3::create_exception;
    use pyo3::exceptions::PyException;

    create_exception!(
        juki_engine._core,
        JukiError,
        PyException,
        "Base class of every juki_engine error."
    );
    create_exception!(
        juki_engine._core,
        InvalidIdentifier,
        JukiError,
        "An identifier is malformed or has a wrong check digit."
    );
    create_exception!(
        juki_engine._core,
        InvalidInput,
        JukiError,
        "Input does not have the documented shape."
    );
    create_exception!(
        juki_engine._core,
        DuplicateIdentifier,
        InvalidInput,
        "Two rows carry the same identifier."
    );
    create_exception!(
        juki_engine._core,
        SnapshotCorrupt,
        JukiError,
        "A snapshot file is truncated, corrupted or missing."
    );
    create_exception!(
        juki_engine._core,
        SnapshotIOError,
        JukiError,
        "An I/O failure while reading or writing."
    );
}

impl From<JukiError> for PyErr {
    fn from(e: JukiError) -> PyErr {
        use exceptions as py;
        match e {
            JukiError::InvalidIdentifier(m) => py::InvalidIdentifier::new_err(m),
            JukiError::InvalidInput(m) => py::InvalidInput::new_err(m),
            JukiError::DuplicateIdentifier(m) => py::DuplicateIdentifier::new_err(m),
            JukiError::SnapshotCorrupt(m) => py::SnapshotCorrupt::new_err(m),
            JukiError::Io(m) => py::SnapshotIOError::new_err(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::types::PyTypeMethods;
    use pyo3::Python;

    #[test]
    fn each_variant_maps_to_its_own_class() {
        Python::initialize();
        Python::attach(|py| {
            let cases: Vec<(JukiError, &str)> = vec![
                (
                    JukiError::InvalidIdentifier("x".into()),
                    "InvalidIdentifier",
                ),
                (JukiError::InvalidInput("x".into()), "InvalidInput"),
                (
                    JukiError::DuplicateIdentifier("x".into()),
                    "DuplicateIdentifier",
                ),
                (JukiError::SnapshotCorrupt("x".into()), "SnapshotCorrupt"),
                (JukiError::Io("x".into()), "SnapshotIOError"),
            ];
            for (err, name) in cases {
                let py_err: PyErr = err.into();
                let ty = py_err.get_type(py);
                assert_eq!(ty.name().unwrap().to_string(), name);
                assert!(py_err.is_instance_of::<exceptions::JukiError>(py));
                assert_eq!(ty.module().unwrap().to_string(), "juki_engine._core");
                assert_eq!(py_err.value(py).to_string(), "x");
            }
        });
    }
}
