use std::fs::File;
use std::io::{BufWriter, Write};

use weir_engine::OutputStream;

use super::FileConfig;
use crate::codec::encode_json;
use crate::ConnectorError;

/// Writes a stream as JSON lines.
pub struct FileSink {
    config: FileConfig,
    out: Box<dyn Write + Send>,
}

impl FileSink {
    /// Creates the file now, so an unwritable path is reported before the rules start.
    pub fn create(config: FileConfig) -> Result<FileSink, ConnectorError> {
        let out: Box<dyn Write + Send> = if config.is_std() {
            Box::new(BufWriter::with_capacity(1 << 16, std::io::stdout()))
        } else {
            let f = File::create(&config.path).map_err(|e| config.io_error(e))?;
            Box::new(BufWriter::with_capacity(1 << 16, f))
        };
        Ok(FileSink { config, out })
    }

    /// Drains the stream to the file; returns how many events were written.
    pub fn run(mut self, events: OutputStream) -> Result<u64, ConnectorError> {
        let mut n = 0;
        for batch in events {
            for e in &batch {
                encode_json(&e.row, &mut self.out).map_err(|e| self.config.io_error(e))?;
            }
            n += batch.len() as u64;
        }
        self.out.flush().map_err(|e| self.config.io_error(e))?;
        Ok(n)
    }
}
