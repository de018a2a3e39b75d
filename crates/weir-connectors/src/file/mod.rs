//! The file connector: reads JSON lines or CSV from a file or stdin (`-`), writes JSON lines to
//! a file or stdout (`-`).

pub mod live;
mod sink;
mod source;

pub use sink::FileSink;
pub use source::{FileSource, SourceStats};

use crate::codec::Format;
use crate::ConnectorError;

/// Where a file connector reads or writes, checked before anything runs.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// A path, or `-` for stdin / stdout.
    pub path: String,
    pub format: Format,
}

impl FileConfig {
    pub fn new(path: &str, format_option: Option<&str>) -> Result<FileConfig, ConnectorError> {
        if path.is_empty() {
            return Err(ConnectorError::Config("a file path is empty".into()));
        }
        let format = Format::choose(format_option, path).map_err(ConnectorError::Config)?;
        Ok(FileConfig {
            path: path.to_owned(),
            format,
        })
    }

    pub fn is_std(&self) -> bool {
        self.path == "-"
    }

    /// An I/O failure on this file, named by its path.
    pub fn io_error(&self, source: std::io::Error) -> ConnectorError {
        ConnectorError::Io {
            path: self.path.clone().into(),
            source,
        }
    }
}
