use std::fs::File;
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use weir_engine::Ingest;

use super::FileConfig;
use crate::codec::{decode_csv, decode_json, Format};
use crate::{ConnectorError, DeadLetter};

/// What a source read.
#[derive(Debug, Default, Clone, Copy)]
pub struct SourceStats {
    pub records: u64,
    pub dead: u64,
}

/// Reads a file into a stream; a malformed record becomes a dead letter, never a stopped run.
pub struct FileSource {
    config: FileConfig,
    reader: Box<dyn BufRead + Send>,
}

impl FileSource {
    /// Opens the file now, so a missing file is reported before the rules start.
    pub fn open(config: FileConfig) -> Result<FileSource, ConnectorError> {
        let reader: Box<dyn BufRead + Send> = if config.is_std() {
            Box::new(BufReader::with_capacity(1 << 16, std::io::stdin()))
        } else {
            let f = File::open(&config.path).map_err(|source| ConnectorError::Io {
                path: config.path.clone().into(),
                source,
            })?;
            Box::new(BufReader::with_capacity(1 << 16, f))
        };
        Ok(FileSource { config, reader })
    }

    /// Feeds every record to `ingest` and ends the stream; dead letters go to `dead`.
    pub fn run(
        self,
        mut ingest: Ingest,
        dead: &mut dyn FnMut(DeadLetter),
    ) -> Result<SourceStats, ConnectorError> {
        let stream = ingest.stream().name.clone();
        let path = self.config.path.clone();
        let io_err = |source| ConnectorError::Io {
            path: path.clone().into(),
            source,
        };
        let mut stats = SourceStats::default();
        let mut reject = |line: u64, reason: String, raw: String, stats: &mut SourceStats| {
            stats.dead += 1;
            dead(DeadLetter {
                stream: stream.clone(),
                line,
                reason,
                raw,
            });
        };
        match self.config.format {
            Format::JsonLines => {
                let mut reader = self.reader;
                let mut buf = Vec::with_capacity(256);
                let mut line_no = 0u64;
                loop {
                    buf.clear();
                    if reader.read_until(b'\n', &mut buf).map_err(io_err)? == 0 {
                        break;
                    }
                    line_no += 1;
                    let line = buf.trim_ascii_end();
                    if line.trim_ascii_start().is_empty() {
                        continue;
                    }
                    stats.records += 1;
                    match decode_json(line).and_then(|row| ingest.push(row)) {
                        Ok(()) => {}
                        Err(reason) => reject(
                            line_no,
                            reason,
                            String::from_utf8_lossy(line).into_owned(),
                            &mut stats,
                        ),
                    }
                }
            }
            Format::Csv => {
                let mut rdr = csv::ReaderBuilder::new()
                    .flexible(true)
                    .from_reader(self.reader);
                let header: Vec<Arc<str>> = rdr
                    .headers()
                    .map_err(|e| io_err(std::io::Error::other(e)))?
                    .iter()
                    .map(Arc::from)
                    .collect();
                for (i, rec) in rdr.records().enumerate() {
                    stats.records += 1;
                    let line = i as u64 + 2;
                    match rec {
                        Ok(r) => {
                            if let Err(reason) =
                                decode_csv(&header, &r).and_then(|row| ingest.push(row))
                            {
                                reject(
                                    line,
                                    reason,
                                    r.iter().collect::<Vec<_>>().join(","),
                                    &mut stats,
                                );
                            }
                        }
                        Err(e) => reject(line, e.to_string(), String::new(), &mut stats),
                    }
                }
            }
        }
        ingest.finish();
        Ok(stats)
    }
}
