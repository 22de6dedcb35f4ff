//! The error type of `etlkit-core` and of every pipeline run.

use std::fmt;

/// A boxed error from another crate or from user code, kept whole so `source()` chains stay intact.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout `etlkit-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which pipeline stage produced an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// The [`Source`](crate::Source) or the re-batching right after it.
    Source,
    /// A [`Transform`](crate::Transform).
    Transform,
    /// The [`Sink`](crate::Sink).
    Sink,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Source => "source",
            Stage::Transform => "transform",
            Stage::Sink => "sink",
        })
    }
}

/// Errors of `etlkit-core`.
///
/// Errors from other etlkit crates convert into [`Error::Stage`] (each crate implements
/// `From<ItsError> for etlkit_core::Error`), keeping the original error as the `source()` so callers can
/// downcast to it. [`Error::is_retryable`] says whether running the same work again can succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range. Never retryable.
    #[error("invalid configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field, e.g. `batch_size`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A stage (source, transform or sink) failed; `source` is the stage's own error.
    ///
    /// `Display` names the stage and ends with the innermost cause of the chain (the part a person can
    /// act on); [`Error::report`] prints every link.
    #[error("{stage} `{name}` failed: {}", innermost(source.as_ref()))]
    Stage {
        /// Which kind of stage.
        stage: Stage,
        /// The stage's name, e.g. `csv:trips.csv` or `postgres-copy:trips`.
        name: String,
        /// Whether retrying the same work can help (a dropped connection, a deadlock), as judged by the
        /// stage that raised it.
        retryable: bool,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// An Arrow compute or construction error inside the runtime.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A transform returned a batch whose schema differs from the one it declared in
    /// [`Transform::output_schema`](crate::Transform::output_schema) (names, types, nullability or
    /// order). A bug in that transform; never retryable. Nothing is committed.
    #[error("transform `{transform}` broke its declared output schema: {difference}")]
    TransformSchema {
        /// The transform's name.
        transform: String,
        /// The first differing column, e.g. ``column 0: declared `a` Utf8, found `b` Utf8``.
        difference: String,
    },
    /// A batch did not have the schema the stage expected.
    #[error("schema mismatch in {stage}: expected {expected}, found {found}")]
    SchemaMismatch {
        /// The stage that noticed.
        stage: Stage,
        /// The expected schema, rendered.
        expected: String,
        /// The schema found, rendered.
        found: String,
    },
    /// A stage panicked. The panic message is kept; the pipeline stopped every other task.
    #[error("{stage} panicked: {message}")]
    Panicked {
        /// Which stage.
        stage: Stage,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The counts do not add up: rows read (+ added) ≠ written + rejected + de-duplicated + filtered.
    /// This means a stage lost or invented rows; it is a bug in that stage and never retryable.
    #[error(
        "row accounting mismatch: read {read} != written {written} + rejected {rejected} + deduplicated {deduplicated} + filtered {filtered}"
    )]
    RowAccounting {
        /// Rows read (for the transforms' check: rows into the transforms plus rows they added).
        read: u64,
        /// Rows written.
        written: u64,
        /// Rows rejected.
        rejected: u64,
        /// Rows dropped as duplicates.
        deduplicated: u64,
        /// Rows dropped by transforms for other reasons.
        filtered: u64,
    },
}

impl Error {
    /// Wraps a stage's error, taking `retryable` from the stage's own judgement.
    pub fn stage(
        stage: Stage,
        name: impl Into<String>,
        retryable: bool,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Stage { stage, name: name.into(), retryable, source: source.into() }
    }

    /// Whether running the same work again can succeed (e.g. after a dropped connection or a
    /// deadlock). Configuration errors, bad input and bugs are never retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Stage { retryable: true, .. })
    }

    /// The whole cause chain for people: ``sink `pg` failed: copy failed: row 3 column `qty` ...``.
    /// Links whose text the previous link already contains are skipped.
    ///
    /// ```
    /// let e = etlkit_core::Error::stage(
    ///     etlkit_core::Stage::Sink,
    ///     "pg",
    ///     false,
    ///     std::io::Error::other("connection refused"),
    /// );
    /// assert_eq!(e.report().to_string(), "sink `pg` failed: connection refused");
    /// ```
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }

    /// Finds the first error of type `E` in the `source()` chain (including `self`'s direct source).
    pub fn find_source<E: std::error::Error + 'static>(&self) -> Option<&E> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(hit) = e.downcast_ref::<E>() {
                return Some(hit);
            }
            cur = e.source();
        }
        None
    }
}

/// The innermost error of a `source()` chain starting at `e` (`e` itself when it has no source).
fn innermost<'a>(e: &'a (dyn std::error::Error + 'static)) -> &'a (dyn std::error::Error + 'static) {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur
}

/// Prints an error with every link of its `source()` chain, joined by `: ` (see [`Error::report`]).
/// Works for any error, e.g. `Report::of(&my_error)`.
pub struct Report<'a>(&'a (dyn std::error::Error + 'static));

impl<'a> Report<'a> {
    /// A report of any error's chain.
    pub fn of(e: &'a (dyn std::error::Error + 'static)) -> Self {
        Report(e)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A stage error's own Display already ends with the innermost cause; print its head only
        // and let the chain follow in order.
        let mut printed = match self.0.downcast_ref::<Error>() {
            Some(Error::Stage { stage, name, .. }) => format!("{stage} `{name}` failed"),
            _ => self.0.to_string(),
        };
        f.write_str(&printed)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            let text = e.to_string();
            if !printed.contains(&text) {
                write!(f, ": {text}")?;
                printed.push_str(&text);
            }
            cur = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A `main` return type that prints an error's whole cause chain ([`Report`]) on stderr and exits
/// with a failure code, instead of the `Debug` dump a `Result` from `main` prints.
///
/// ```no_run
/// fn run() -> Result<(), Box<dyn std::error::Error>> {
///     Err(std::io::Error::other("connection refused"))?
/// }
/// fn main() -> etlkit_core::Reported {
///     run().into() // prints `error: connection refused`, exits with 1
/// }
/// ```
pub struct Reported(Option<String>);

impl From<std::result::Result<(), Box<dyn std::error::Error>>> for Reported {
    fn from(r: std::result::Result<(), Box<dyn std::error::Error>>) -> Self {
        Reported(r.err().map(|e| Report::of(&*e).to_string()))
    }
}

impl From<std::result::Result<(), BoxError>> for Reported {
    fn from(r: std::result::Result<(), BoxError>) -> Self {
        Reported(r.err().map(|e| Report::of(&*e).to_string()))
    }
}

impl From<Result<()>> for Reported {
    fn from(r: Result<()>) -> Self {
        Reported(r.err().map(|e| e.report().to_string()))
    }
}

impl std::process::Termination for Reported {
    fn report(self) -> std::process::ExitCode {
        match self.0 {
            None => std::process::ExitCode::SUCCESS,
            Some(report) => {
                eprintln!("error: {report}");
                std::process::ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("copy failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn reported_renders_the_whole_chain_for_every_error_kind() {
        let boxed: Box<dyn std::error::Error> = Box::new(Outer(std::io::Error::other("refused")));
        assert_eq!(Reported::from(Err(boxed)).0.as_deref(), Some("copy failed: refused"));
        let sendable: BoxError = Box::new(Outer(std::io::Error::other("refused")));
        assert_eq!(Reported::from(Err(sendable)).0.as_deref(), Some("copy failed: refused"));
        let core = Error::stage(Stage::Source, "csv:a.csv", false, Outer(std::io::Error::other("refused")));
        assert_eq!(
            Reported::from(Err::<(), _>(core)).0.as_deref(),
            Some("source `csv:a.csv` failed: copy failed: refused")
        );
        assert!(Reported::from(Ok::<(), Error>(())).0.is_none());
    }
}
