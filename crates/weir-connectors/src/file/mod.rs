//! The file connector: reads JSON lines or CSV from a file or stdin (`-`), writes JSON lines to
//! a file or stdout (`-`).

pub mod live;
mod sink;
mod source;
pub mod spec;

pub use sink::FileSink;
pub use source::{FileSource, SourceStats};

use std::collections::BTreeMap;

use crate::codec::{CsvOptions, Format};
use crate::ConnectorError;

/// Where a file connector reads or writes, checked before anything runs.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// A path, or `-` for stdin / stdout.
    pub path: String,
    /// How records are written in it.
    pub format: Format,
    /// How CSV is read, when the format is CSV.
    pub csv: CsvOptions,
}

impl FileConfig {
    /// A file of a stream with these `options` (`format`, `delimiter`, `header`); `format`
    /// overrides the stream's format.
    pub fn new(
        path: &str,
        options: &BTreeMap<String, String>,
        format: Option<&str>,
    ) -> Result<FileConfig, ConnectorError> {
        if path.is_empty() {
            return Err(ConnectorError::Config("a file path is empty".into()));
        }
        let chosen = format.or(options.get("format").map(String::as_str));
        let format = Format::choose(chosen, path).map_err(ConnectorError::Config)?;
        Ok(FileConfig {
            path: path.to_owned(),
            format,
            csv: CsvOptions::from_options(options).map_err(ConnectorError::Config)?,
        })
    }

    /// A JSON-lines file of results.
    pub fn json(path: &str) -> Result<FileConfig, ConnectorError> {
        FileConfig::new(path, &BTreeMap::new(), Some("json"))
    }

    /// Whether the path is `-` (stdin or stdout).
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
