//! The crate's error type.

use std::fmt;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by the generator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; every problem found is listed, each naming its field.
    #[error("invalid synth config: {}", ProblemList(.problems))]
    InvalidConfig {
        /// The problems found, in field order.
        problems: Vec<ConfigProblem>,
    },
    /// Writing the events or the truth failed.
    #[error("failed to write generated output")]
    Io(#[from] std::io::Error),
    /// Reading or writing the truth CSV failed.
    #[error("failed to read or write the truth csv")]
    Csv(#[from] csv::Error),
    /// A truth CSV row could not be understood.
    #[error("truth csv line {line}: {message}")]
    BadTruth {
        /// The 1-based line number in the CSV (the header is line 1).
        line: u64,
        /// What was wrong with the row.
        message: String,
    },
}

impl Error {
    /// Returns the names of the configuration fields at fault, empty for other errors.
    pub fn fields(&self) -> Vec<&'static str> {
        match self {
            Error::InvalidConfig { problems } => problems.iter().map(|p| p.field).collect(),
            _ => Vec::new(),
        }
    }
}

/// One problem with one configuration field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The name of the offending field, as spelled in `SynthConfig` (and the CLI flag).
    pub field: &'static str,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.message)
    }
}

struct ProblemList<'a>(&'a [ConfigProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
