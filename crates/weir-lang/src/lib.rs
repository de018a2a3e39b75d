//! weir's streaming SQL. Text goes through [`parse`] (tokens, statements, the weir dialect),
//! then [`bind`] (names, types, windows, patterns) into a [`plan::Program`] that the engine runs.

pub mod bind;
pub mod decimal;
pub mod diag;
pub mod dialect;
pub mod expr;
pub mod functions;
pub mod parse;
pub mod plan;
pub mod templates;
pub mod types;

pub use bind::{compile, compile_checked, compile_with, STREAM_OPTIONS};
pub use diag::{Diagnostic, Diagnostics, Pos};
pub use plan::Program;
