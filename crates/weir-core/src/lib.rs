//! The vocabulary every other weir crate speaks: [`Value`], [`Row`], [`Event`], time and the
//! classification of errors.

pub mod error;
pub mod event;
pub mod files;
pub mod hash;
pub mod redact;
pub mod time;
pub mod value;

pub use error::{Blame, Classify};
pub use event::{Event, Row};
pub use time::{parse_duration, Clock, ManualClock, SystemClock, EVENT_TIME_RANGE};
pub use value::{parse_json_row, Value};
