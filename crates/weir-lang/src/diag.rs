//! Diagnostics: every problem in a rule file, each with its line, column and a hint.

use std::fmt;

/// A position in rule text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
}

impl From<sqlparser::tokenizer::Location> for Pos {
    fn from(l: sqlparser::tokenizer::Location) -> Self {
        Pos {
            line: l.line as u32,
            col: l.column as u32,
        }
    }
}

impl From<sqlparser::tokenizer::Span> for Pos {
    fn from(s: sqlparser::tokenizer::Span) -> Self {
        s.start.into()
    }
}

/// One problem found in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem is.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when weir can tell.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem at `pos`, without a hint.
    pub fn new(pos: impl Into<Pos>, message: impl Into<String>) -> Self {
        Diagnostic {
            pos: pos.into(),
            message: message.into(),
            hint: None,
        }
    }

    /// The same problem with a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: error: {}",
            self.pos.line, self.pos.col, self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// All the problems of one rule file, in source order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} error(s) in the rules", .0.len())]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Renders every diagnostic with the offending source line and a caret under the column.
    pub fn render(&self, file: &str, source: &str) -> String {
        let lines: Vec<&str> = source.lines().collect();
        let mut out = String::new();
        for d in &self.0 {
            out.push_str(&format!(
                "{file}:{}:{}: error: {}\n",
                d.pos.line, d.pos.col, d.message
            ));
            if let Some(text) = lines.get((d.pos.line as usize).wrapping_sub(1)) {
                out.push_str(&format!("  | {text}\n  | "));
                out.push_str(&" ".repeat((d.pos.col as usize).saturating_sub(1)));
                out.push_str("^\n");
            }
            if let Some(h) = &d.hint {
                out.push_str(&format!("  = hint: {h}\n"));
            }
        }
        out
    }
}

impl weir_core::Classify for Diagnostics {
    fn blame(&self) -> weir_core::Blame {
        weir_core::Blame::User
    }
}

/// The closest candidate to a misspelt name, for "did you mean" hints.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&name, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean() {
        assert_eq!(
            closest("sensr_id", ["ts", "sensor_id", "value"]),
            Some("sensor_id")
        );
        assert_eq!(closest("zzz", ["ts", "sensor_id"]), None);
    }
}
