//! Spec errors that say where, what and how to fix.

use std::fmt;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Where {
    /// A position in a file (1-based line and column).
    File {
        /// File name as the user gave it.
        file: String,
        /// 1-based line, never past the file's last (see `locate::end_of_input`).
        line: usize,
        /// 1-based column, in characters.
        column: usize,
    },
    /// A command-line flag.
    Flag(String),
    /// The state store object (for specs read back from a store).
    Store(String),
    /// Nowhere in particular (a derived value).
    Unknown,
}

impl fmt::Display for Where {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Where::File { file, line, column } => write!(f, "{file}:{line}:{column}"),
            // `env VAR` when a flag's value came from its environment variable.
            Where::Flag(flag) if flag.starts_with("env ") => f.write_str(flag),
            Where::Flag(flag) => write!(f, "flag {flag}"),
            Where::Store(key) => write!(f, "state {key}"),
            Where::Unknown => f.write_str("spec"),
        }
    }
}

/// One problem in a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Where the offending value was written: file position, flag, or stored object.
    pub at: Where,
    /// Field path, e.g. `spec.networking.podCIDR` (prefixed with the document, e.g. `InstanceGroup nodes`).
    pub field: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.at, self.field, self.problem)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// All problems found in a spec (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "the cluster spec has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "- {e}")?;
        }
        Ok(())
    }
}
