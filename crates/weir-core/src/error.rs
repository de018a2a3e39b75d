//! Error classification shared by all crates: every typed error says whose fault it is and whether
//! retrying can help, so callers decide on policy without matching error text.

/// Who is at fault for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The rule, request or input is wrong; the user must change it.
    User,
    /// Something outside weir (a broker, a disk, the network) failed.
    External,
    /// A bug or an invariant broken inside weir.
    Internal,
}

/// Implemented by every typed error in weir.
pub trait Classify {
    /// Who is at fault: the user, an outside system or weir.
    fn blame(&self) -> Blame;
    /// Whether the same operation may succeed if tried again later.
    fn retryable(&self) -> bool {
        self.blame() == Blame::External
    }
}
