//! The crate's one error type and its single mapping to Python exceptions.
//!
//! Every fallible Rust function returns [`Result`]; the Python layer sees one exception class per
//! variant, all under `juki_engine.JukiError`, so the gRPC layer can map each class to a status.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use arrow_schema::ArrowError;
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
    /// Memory (or another resource) ran out for a request: a caller may retry a smaller one.
    ResourceExhausted(String),
    /// A bug: the core panicked. The message carries the panic's, after `internal error: `.
    Internal(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, JukiError>;

/// The message of a caught panic's payload (a `&str` or a `String`, as `panic!` makes them).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Run `f`, turning a panic into `JukiError::Internal` ("internal error: <panic message>"), so
/// no panic unwinds into Python. Asserting unwind safety is sound: a registry is immutable once
/// built (nothing `f` borrows can be left half-updated), and what `f` builds is dropped.
pub fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(JukiError::Internal(format!(
            "internal error: {}",
            panic_message(payload.as_ref())
        )))
    })
}

/// The most characters of a client's value that an error message repeats.
pub const ECHO_CHARS: usize = 32;

/// A client's value as an error message repeats it: valid UTF-8 (invalid bytes replaced), at
/// most [`ECHO_CHARS`] characters, then "…" where cut. Reads at most a few hundred bytes of
/// `value`, so a row pointing at a huge string costs no more than one pointing at a short one.
pub fn echo(value: &[u8]) -> String {
    // ECHO_CHARS + 1 characters of at most 4 bytes each: enough to tell whether to cut.
    let head = &value[..value.len().min(4 * (ECHO_CHARS + 1))];
    let text = String::from_utf8_lossy(head);
    match text.char_indices().nth(ECHO_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None if head.len() < value.len() => format!("{text}…"),
        None => text.into_owned(),
    }
}

impl fmt::Display for JukiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JukiError::InvalidIdentifier(m)
            | JukiError::InvalidInput(m)
            | JukiError::DuplicateIdentifier(m)
            | JukiError::SnapshotCorrupt(m)
            | JukiError::Io(m)
            | JukiError::ResourceExhausted(m)
            | JukiError::Internal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for JukiError {}

impl JukiError {
    /// An Arrow error met while handling `what` (a column, a file, a stream), classed by what
    /// happened: an I/O failure is `Io`, memory running out is `ResourceExhausted`, anything
    /// else (a wrong type, invalid data, a failed cast) is `InvalidInput`.
    pub fn arrow(what: impl fmt::Display, e: ArrowError) -> JukiError {
        match e {
            ArrowError::IoError(m, io) => JukiError::Io(format!("{what}: {m}: {io}")),
            ArrowError::MemoryError(m) => JukiError::ResourceExhausted(format!("{what}: {m}")),
            other => JukiError::InvalidInput(format!("{what}: {other}")),
        }
    }
}

impl From<ArrowError> for JukiError {
    fn from(e: ArrowError) -> Self {
        match e {
            ArrowError::IoError(m, io) => JukiError::Io(format!("{m}: {io}")),
            ArrowError::MemoryError(m) => JukiError::ResourceExhausted(m),
            other => JukiError::InvalidInput(other.to_string()),
        }
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
    create_exception!(
        juki_engine._core,
        ResourceExhausted,
        JukiError,
        "Memory ran out for a request; a smaller one may succeed."
    );
    create_exception!(
        juki_engine._core,
        InternalError,
        JukiError,
        "A bug in the core: it panicked, and the call was abandoned."
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
            JukiError::ResourceExhausted(m) => py::ResourceExhausted::new_err(m),
            JukiError::Internal(m) => py::InternalError::new_err(m),
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
                (
                    JukiError::ResourceExhausted("x".into()),
                    "ResourceExhausted",
                ),
                (JukiError::Internal("x".into()), "InternalError"),
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

    #[test]
    fn a_panic_becomes_an_internal_error() {
        let e = guarded(|| -> Result<()> { panic!("boom") }).unwrap_err();
        assert_eq!(e, JukiError::Internal("internal error: boom".into()));
        let n = 7;
        let e = guarded(|| -> Result<()> { panic!("row {n} broke") }).unwrap_err();
        assert_eq!(e, JukiError::Internal("internal error: row 7 broke".into()));
        // A panic on a rayon worker reaches the caller, and is caught there too.
        let e = guarded(|| -> Result<()> {
            use rayon::prelude::*;
            (0..1000)
                .into_par_iter()
                .for_each(|i| assert!(i < 999, "worker {i}"));
            Ok(())
        })
        .unwrap_err();
        assert_eq!(e, JukiError::Internal("internal error: worker 999".into()));
        assert_eq!(guarded(|| Ok(3)), Ok(3));
    }

    #[test]
    fn echo_is_bounded_and_valid_utf8() {
        assert_eq!(echo(b"12345"), "12345");
        let long = "あ".repeat(1000);
        let shown = echo(long.as_bytes());
        assert_eq!(shown.chars().count(), ECHO_CHARS + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(
            echo("x".repeat(ECHO_CHARS).as_bytes()),
            "x".repeat(ECHO_CHARS)
        );
        assert_eq!(echo(&[0xff, b'a']), "\u{fffd}a");
        // A multi-byte character cut by the byte window is not shown half.
        let mut bytes = vec![b'a'; 4 * (ECHO_CHARS + 1) - 1];
        bytes.extend("あ".as_bytes());
        assert_eq!(echo(&bytes), format!("{}…", "a".repeat(ECHO_CHARS)));
    }

    #[test]
    fn arrow_errors_map_by_kind() {
        let io = || std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
        type Check = fn(&JukiError) -> bool;
        let cases: Vec<(ArrowError, Check)> = vec![
            (
                ArrowError::IoError("write".into(), io()),
                |e| matches!(e, JukiError::Io(m) if m.contains("disk full") && m.starts_with("f: ")),
            ),
            (
                ArrowError::MemoryError("no memory".into()),
                |e| matches!(e, JukiError::ResourceExhausted(m) if m == "f: no memory"),
            ),
            (
                ArrowError::CastError("bad".into()),
                |e| matches!(e, JukiError::InvalidInput(m) if m.contains("bad")),
            ),
            (
                ArrowError::InvalidArgumentError("offsets".into()),
                |e| matches!(e, JukiError::InvalidInput(m) if m.contains("offsets")),
            ),
            (ArrowError::IpcError("truncated".into()), |e| {
                matches!(e, JukiError::InvalidInput(_))
            }),
        ];
        for (arrow, check) in cases {
            let shown = arrow.to_string();
            let named = JukiError::arrow("f", arrow);
            assert!(check(&named), "{shown} -> {named:?}");
        }
        let plain: JukiError = ArrowError::MemoryError("m".into()).into();
        assert_eq!(plain, JukiError::ResourceExhausted("m".into()));
        let plain: JukiError = ArrowError::IoError("w".into(), io()).into();
        assert!(matches!(plain, JukiError::Io(_)));
        let plain: JukiError = ArrowError::ComputeError("c".into()).into();
        assert!(matches!(plain, JukiError::InvalidInput(_)));
    }
}
