//! The one interface through which the engine, the executor and the mirror tell a watcher what
//! they are doing. The library never writes to the terminal itself: the CLI implements
//! [`Reporter`] with progress bars and coloured text (`src/cli/output.rs`), tests and
//! benchmarks use [`Progress::hidden`].

use std::fmt;
use std::sync::Arc;

/// What a phase counts, so a watcher can format its figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Tasks (instances created, resources deleted).
    Steps,
    /// Bytes transferred.
    Bytes,
}

/// The tone of a heading in rendered output (a plan's "Will create" is green on a terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Something is added.
    Add,
    /// Something changes in place or is repaired.
    Change,
    /// Something is removed.
    Remove,
}

/// Turns a heading into text for the output at hand: ANSI colours on a terminal that wants
/// them, the plain text otherwise.
pub trait Paint {
    /// `text`, styled for `tone`.
    fn paint(&self, text: &str, tone: Tone) -> String;
}

/// Plain text: no styling at all (files, pipes, `NO_COLOR`, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl Paint for Plain {
    fn paint(&self, text: &str, _tone: Tone) -> String {
        text.to_string()
    }
}

/// Whoever watches a long operation: the CLI's terminal, or nobody.
pub trait Reporter: Send + Sync {
    /// A phase of `total` units starts.
    fn phase(&self, name: &str, total: u64, unit: Unit) -> Arc<dyn PhaseReporter>;
    /// A one-line notice the user should see (a lock taken over, a run resumed).
    fn note(&self, message: &str);
}

/// The watcher's view of one phase. Totals may move while it runs (a blob found to be present
/// already is taken off; a retried transfer gives back what it had counted).
pub trait PhaseReporter: Send + Sync {
    /// `n` more units done.
    fn advance(&self, n: u64);
    /// `n` units counted as done must be done again (a transfer restarts).
    fn rewind(&self, n: u64);
    /// The total grows by `n` units.
    fn grow(&self, n: u64);
    /// The total shrinks by `n` units.
    fn shrink(&self, n: u64);
    /// The phase ended; `message` sums it up (e.g. "4 created").
    fn finish(&self, message: &str);
    /// The phase ended and leaves nothing behind (a transfer whose figures were only live).
    fn clear(&self);
}

/// A cheap handle on a [`Reporter`], passed down to the code that does the work.
#[derive(Clone)]
pub struct Progress {
    reporter: Arc<dyn Reporter>,
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress")
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::hidden()
    }
}

impl Progress {
    /// Report to `reporter`.
    pub fn new(reporter: Arc<dyn Reporter>) -> Self {
        Progress { reporter }
    }

    /// Report to nobody (tests, benchmarks, scripts that asked for no progress).
    pub fn hidden() -> Self {
        Progress::new(Arc::new(Hidden))
    }

    /// Start a phase of `total` steps.
    pub fn phase(&self, name: &str, total: u64) -> Phase {
        Phase(self.reporter.phase(name, total, Unit::Steps))
    }

    /// Start a phase that moves `total` bytes.
    pub fn bytes(&self, name: &str, total: u64) -> Phase {
        Phase(self.reporter.phase(name, total, Unit::Bytes))
    }

    /// Tell the user something worth a line of its own.
    pub fn note(&self, message: &str) {
        self.reporter.note(message);
    }
}

/// One phase of a run; clones report to the same phase.
#[derive(Clone)]
pub struct Phase(Arc<dyn PhaseReporter>);

impl fmt::Debug for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phase")
    }
}

impl Phase {
    /// `n` more units done.
    pub fn inc(&self, n: u64) {
        self.0.advance(n);
    }
    /// Give back `n` units counted as done (the transfer restarts).
    pub fn rewind(&self, n: u64) {
        self.0.rewind(n);
    }
    /// The total grows by `n`.
    pub fn grow(&self, n: u64) {
        self.0.grow(n);
    }
    /// The total shrinks by `n`.
    pub fn shrink(&self, n: u64) {
        self.0.shrink(n);
    }
    /// The phase is over; `message` sums it up.
    pub fn finish(&self, message: String) {
        self.0.finish(&message);
    }
    /// The phase is over and leaves no line behind.
    pub fn clear(&self) {
        self.0.clear();
    }
}

/// The reporter of [`Progress::hidden`].
struct Hidden;

impl Reporter for Hidden {
    fn phase(&self, _name: &str, _total: u64, _unit: Unit) -> Arc<dyn PhaseReporter> {
        Arc::new(Hidden)
    }
    fn note(&self, _message: &str) {}
}

impl PhaseReporter for Hidden {
    fn advance(&self, _n: u64) {}
    fn rewind(&self, _n: u64) {}
    fn grow(&self, _n: u64) {}
    fn shrink(&self, _n: u64) {}
    fn finish(&self, _message: &str) {}
    fn clear(&self) {}
}
