//! The operators. Each file is one family: projection and filter (with change functions),
//! windowed aggregation, interval join, pattern matching; `order` holds events until the
//! watermark says their turn has come.

pub mod aggregate;
pub mod join;
pub mod order;
pub mod pattern;
pub mod project;
pub mod window;
