use std::fs::File;
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use std::sync::mpsc::sync_channel;

use weir_core::Event;
use weir_engine::{Ingest, Stamp};

use super::FileConfig;
use crate::codec::{decode_csv, decode_json, Format};
use crate::{ConnectorError, DeadLetter};

/// What a source read.
#[derive(Debug, Default, Clone, Copy)]
pub struct SourceStats {
    /// Records read.
    pub records: u64,
    /// Records that went to the dead letters.
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
            let f = File::open(&config.path).map_err(|e| config.io_error(e))?;
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
        let config = &self.config;
        let mut stats = SourceStats::default();
        let mut reject = |d: DeadLetter| {
            stats.dead += 1;
            dead(d);
        };
        let records = match config.format {
            Format::JsonLines | Format::Debs2012 => {
                let decoders = std::thread::available_parallelism()
                    .map_or(2, |n| n.get())
                    .clamp(1, 8);
                let line: LineDecoder = match config.format {
                    Format::Debs2012 => crate::debs::decode_line,
                    _ => |l, out| out.push(decode_json(l)),
                };
                let lines = Lines {
                    decoders,
                    decode: line,
                };
                decode_parallel(self.reader, &mut ingest, lines, &stream, &mut reject)
                    .map_err(|e| config.io_error(e))?
            }
            Format::Csv => {
                let letter = |line, reason, raw| DeadLetter {
                    stream: stream.clone(),
                    line,
                    reason,
                    raw,
                };
                let mut rdr = csv::ReaderBuilder::new()
                    .flexible(true)
                    .delimiter(config.csv.delimiter)
                    .has_headers(config.csv.header.is_none())
                    .from_reader(self.reader);
                let header: Vec<Arc<str>> = match &config.csv.header {
                    Some(h) => h.clone(),
                    None => rdr
                        .headers()
                        .map_err(|e| config.io_error(std::io::Error::other(e)))?
                        .iter()
                        .map(Arc::from)
                        .collect(),
                };
                let first = if config.csv.header.is_some() { 1 } else { 2 };
                let mut records = 0;
                for (i, rec) in rdr.records().enumerate() {
                    records += 1;
                    let line = i as u64 + first;
                    match rec {
                        Ok(r) => {
                            if let Err(reason) =
                                decode_csv(&header, &r).and_then(|row| ingest.push(row))
                            {
                                reject(letter(
                                    line,
                                    reason,
                                    r.iter().collect::<Vec<_>>().join(","),
                                ));
                            }
                        }
                        Err(e) => reject(letter(line, e.to_string(), String::new())),
                    }
                }
                records
            }
        };
        stats.records = records;
        ingest.finish();
        Ok(stats)
    }
}

/// The largest record accepted; a larger one is a dead letter (its first bytes are kept).
pub const MAX_RECORD: usize = 1 << 20;

/// About this many bytes of whole lines go to a decoder at a time.
const BLOCK: usize = 256 * 1024;

/// Turns one line into its records (one, or several where a format allows it).
type LineDecoder = fn(&[u8], &mut Vec<Result<weir_core::Row, String>>);

/// How lines are decoded: by which decoder, on how many threads.
struct Lines {
    decoders: usize,
    decode: LineDecoder,
}

/// One decoded block: events in input order, and its dead letters.
struct Decoded {
    records: u64,
    items: Vec<Result<Event, DeadLetter>>,
}

/// Reads blocks of whole lines on this thread's helper, decodes and stamps them on `decoders`
/// threads, and feeds the events to `ingest` in input order (blocks are dealt round-robin and
/// collected in the same rotation, so no reordering buffer is needed).
fn decode_parallel(
    mut reader: Box<dyn BufRead + Send>,
    ingest: &mut Ingest,
    lines: Lines,
    stream: &str,
    dead: &mut dyn FnMut(DeadLetter),
) -> std::io::Result<u64> {
    let Lines { decoders, decode } = lines;
    let stamp = ingest.stamp();
    std::thread::scope(|scope| {
        let mut to_decoders = Vec::new();
        let mut from_decoders = Vec::new();
        for d in 0..decoders {
            let (tx, rx) = sync_channel::<(u64, Vec<u8>)>(2);
            let (out_tx, out_rx) = sync_channel::<Decoded>(2);
            let stamp = stamp.clone();
            let stream = stream.to_owned();
            let named = std::thread::Builder::new().name(format!("decode-{d}"));
            named.spawn_scoped(scope, move || {
                for (first_line, block) in rx {
                    if out_tx
                        .send(decode_block(&block, first_line, &stamp, &stream, decode))
                        .is_err()
                    {
                        break;
                    }
                }
            })?;
            to_decoders.push(tx);
            from_decoders.push(out_rx);
        }
        let reader_thread = std::thread::Builder::new()
            .name("read".into())
            .spawn_scoped(scope, move || -> std::io::Result<()> {
                let mut line_no = 1u64;
                let mut carry: Vec<u8> = Vec::new();
                for turn in 0.. {
                    let mut block = std::mem::take(&mut carry);
                    block.reserve(BLOCK + 4096);
                    let eof = fill(&mut reader, &mut block, BLOCK)?;
                    if !eof {
                        // Keep the partial last line for the next block.
                        match block.iter().rposition(|c| *c == b'\n') {
                            Some(p) => carry = block.split_off(p + 1),
                            // One very long line: read on to its end, keeping no more
                            // than a record may hold (the rest is passed over unread).
                            None => skip_rest_of_line(&mut reader, &mut block)?,
                        }
                    }
                    if block.is_empty() {
                        break;
                    }
                    let lines = block.iter().filter(|c| **c == b'\n').count() as u64
                        + u64::from(block.last() != Some(&b'\n'));
                    if to_decoders[turn % to_decoders.len()]
                        .send((line_no, block))
                        .is_err()
                    {
                        break;
                    }
                    line_no += lines;
                    if eof {
                        break;
                    }
                }
                Ok(())
            })?;
        let mut records = 0;
        'collect: for turn in 0.. {
            let Ok(decoded) = from_decoders[turn % from_decoders.len()].recv() else {
                break 'collect;
            };
            records += decoded.records;
            for item in decoded.items {
                match item {
                    Ok(ev) => ingest.push_event(ev),
                    Err(d) => dead(d),
                }
            }
        }
        reader_thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the file reader panicked")))?;
        Ok(records)
    })
}

/// Reads the rest of the current line into `block`, but no further than one byte past
/// [`MAX_RECORD`]: a line longer than that is kept truncated (a dead letter with its first
/// bytes), whatever its length, so memory stays bounded.
fn skip_rest_of_line(reader: &mut dyn BufRead, block: &mut Vec<u8>) -> std::io::Result<()> {
    let start = block.iter().rposition(|c| *c == b'\n').map_or(0, |p| p + 1);
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        let (n, end) = match buf.iter().position(|c| *c == b'\n') {
            Some(p) => (p + 1, true),
            None => (buf.len(), false),
        };
        let room = (MAX_RECORD + 1).saturating_sub(block.len() - start);
        block.extend_from_slice(&buf[..n.min(room)]);
        if end && n > room {
            block.push(b'\n');
        }
        reader.consume(n);
        if end {
            return Ok(());
        }
    }
}

/// Appends up to about `want` bytes; true at the end of the input.
fn fill(reader: &mut dyn BufRead, block: &mut Vec<u8>, want: usize) -> std::io::Result<bool> {
    while block.len() < want {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(true);
        }
        let n = buf.len().min(want - block.len());
        block.extend_from_slice(&buf[..n]);
        reader.consume(n);
    }
    Ok(false)
}

fn decode_block(
    block: &[u8],
    first_line: u64,
    stamp: &Stamp,
    stream: &str,
    decode: LineDecoder,
) -> Decoded {
    let mut items = Vec::with_capacity(block.len() / 64);
    let mut records = 0;
    let mut rows = Vec::with_capacity(2);
    for (i, line) in block.split(|c| *c == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_RECORD {
            rows.push(Err(format!(
                "a record longer than the limit of {MAX_RECORD} bytes"
            )));
        } else {
            decode(line, &mut rows);
        }
        for decoded in rows.drain(..) {
            records += 1;
            let item = decoded
                .and_then(|row| stamp.event(row))
                .map_err(|reason| DeadLetter {
                    stream: stream.to_owned(),
                    line: first_line + i as u64,
                    reason,
                    raw: String::from_utf8_lossy(&line[..line.len().min(MAX_RECORD)]).into_owned(),
                });
            items.push(item);
        }
    }
    Decoded { records, items }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_without_end_is_kept_no_longer_than_a_record() {
        let huge = vec![b'x'; 8 * MAX_RECORD];
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend_from_slice(&huge);
        input.extend_from_slice(b"\n{\"a\":2}\n");
        let mut reader = std::io::BufReader::new(&input[..]);
        let mut block = Vec::new();
        assert!(!fill(&mut reader, &mut block, 16).unwrap());
        skip_rest_of_line(&mut reader, &mut block).unwrap();
        // The first line, then the long one cut one byte past the limit, with its end.
        assert_eq!(block.len(), 8 + MAX_RECORD + 1 + 1);
        assert_eq!(block.last(), Some(&b'\n'));
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
        assert_eq!(rest, "{\"a\":2}\n");
    }
}
