//! Why a rule did not start, and whose fault that is: the API answers the user's mistake with
//! 400, an outside system that is away with 503 (try again later), and weir's own fault with 500.

use weir_core::{Blame, Classify};

#[derive(Debug, Clone, PartialEq, Eq)]
/// Why a rule did not start, and whose fault that is.
pub struct StartError {
    /// Whose fault: the user's, an outside system's or weir's.
    pub blame: Blame,
    /// What went wrong.
    pub message: String,
}

impl StartError {
    /// The rule, its options or its saved state need the user's decision.
    pub fn user(message: impl Into<String>) -> StartError {
        StartError {
            blame: Blame::User,
            message: message.into(),
        }
    }

    /// A broker, a changelog server or the disk failed.
    pub fn external(message: impl Into<String>) -> StartError {
        StartError {
            blame: Blame::External,
            message: message.into(),
        }
    }

    /// Something weir should never do.
    pub fn internal(message: impl Into<String>) -> StartError {
        StartError {
            blame: Blame::Internal,
            message: message.into(),
        }
    }

    /// The same error with its message rewritten (for another audience's words).
    pub fn map_message(self, f: impl FnOnce(&str) -> String) -> StartError {
        StartError {
            blame: self.blame,
            message: f(&self.message),
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Classify for StartError {
    fn blame(&self) -> Blame {
        self.blame
    }
}
