//! Codecs: JSON lines and CSV in, JSON lines out.

use std::io::Write;
use std::sync::Arc;

use weir_core::value::intern;
use weir_core::{parse_json_row, Row, Value};

/// The formats a file connector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    JsonLines,
    /// Comma (or `delimiter`) separated values, the first record naming the columns unless
    /// `header` does.
    Csv,
    /// The DEBS 2012 Grand Challenge's tab-separated records ([`crate::debs`]).
    Debs2012,
}

impl Format {
    /// The format of a stream's messages, from its `format` option.
    pub fn of_messages(
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<Format, String> {
        match options
            .get("format")
            .map(|f| f.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("json") => Ok(Format::JsonLines),
            Some("csv") => Ok(Format::Csv),
            Some("debs2012") => Ok(Format::Debs2012),
            Some(other) => Err(format!(
                "format '{other}' is not supported; use json, csv or debs2012"
            )),
        }
    }

    /// From a stream's `format` option, else from the file name.
    pub fn choose(option: Option<&str>, path: &str) -> Result<Format, String> {
        match option.map(str::to_ascii_lowercase).as_deref() {
            Some("json") | Some("jsonl") | Some("ndjson") => Ok(Format::JsonLines),
            Some("csv") => Ok(Format::Csv),
            Some("debs2012") => Ok(Format::Debs2012),
            Some(other) => Err(format!(
                "format '{other}' is not supported by the file connector; use json, csv or debs2012"
            )),
            None if path.to_ascii_lowercase().ends_with(".csv") => Ok(Format::Csv),
            None => Ok(Format::JsonLines),
        }
    }
}

/// How CSV is read, from a stream's `delimiter` and `header` options: files and messages
/// alike. Without `header`, the first record names the columns.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// The byte between fields.
    pub delimiter: u8,
    /// The column names, when the data has no header record.
    pub header: Option<Vec<Arc<str>>>,
}

impl CsvOptions {
    /// The CSV options of a stream's `WITH (...)` options.
    pub fn from_options(
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let delimiter = match options.get("delimiter").map(String::as_str) {
            None => b',',
            Some("\\t") | Some("tab") => b'\t',
            Some(d) if d.len() == 1 => d.as_bytes()[0],
            Some(d) => {
                return Err(format!(
                    "option 'delimiter' must be one character (or '\\t'), not '{d}'"
                ))
            }
        };
        let header = options.get("header").map(|h| {
            h.split(delimiter as char)
                .map(|c| intern(c.trim()))
                .collect()
        });
        Ok(CsvOptions { delimiter, header })
    }
}

/// The UTF-8 byte-order mark some editors put at the start of a file.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decodes one JSON line into a row. Flat objects of plain scalars, the usual sensor event,
/// take a fast path; anything else (nesting, escapes, odd numbers, errors) the full parser.
pub fn decode_json(line: &[u8]) -> Result<Row, String> {
    let line = line.strip_prefix(BOM).unwrap_or(line);
    match flat_object(line) {
        Some(row) => Ok(row),
        None => parse_json_row(line),
    }
}

/// Parses `{"k": scalar, ...}` without escapes or nesting; `None` hands the line to the full
/// parser, which also produces the error messages.
fn flat_object(b: &[u8]) -> Option<Row> {
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut row = Row::with_capacity(8);
    ws(&mut i);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            ws(&mut i);
            let key = plain_string(b, &mut i)?;
            ws(&mut i);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i += 1;
            ws(&mut i);
            let value = match *b.get(i)? {
                b'"' => Value::str(plain_string(b, &mut i)?),
                b't' if b[i..].starts_with(b"true") => {
                    i += 4;
                    Value::Bool(true)
                }
                b'f' if b[i..].starts_with(b"false") => {
                    i += 5;
                    Value::Bool(false)
                }
                b'n' if b[i..].starts_with(b"null") => {
                    i += 4;
                    Value::Null
                }
                b'-' | b'0'..=b'9' => {
                    let start = i;
                    let mut float = false;
                    while i < b.len()
                        && matches!(b[i], b'-' | b'+' | b'0'..=b'9' | b'.' | b'e' | b'E')
                    {
                        float |= matches!(b[i], b'.' | b'e' | b'E');
                        i += 1;
                    }
                    let text = std::str::from_utf8(&b[start..i]).ok()?;
                    if float {
                        Value::Float(text.parse::<f64>().ok().filter(|f| f.is_finite())?)
                    } else {
                        Value::Int(text.parse::<i64>().ok()?)
                    }
                }
                _ => return None,
            };
            if row.get(key).is_some() {
                return None;
            }
            row.push(intern(key), value);
            ws(&mut i);
            match b.get(i)? {
                b',' => i += 1,
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    ws(&mut i);
    (i == b.len()).then_some(row)
}

/// A string without escapes or control characters, at `b[*i] == '"'`.
fn plain_string<'a>(b: &'a [u8], i: &mut usize) -> Option<&'a str> {
    if b.get(*i) != Some(&b'"') {
        return None;
    }
    let start = *i + 1;
    let len = b[start..]
        .iter()
        .position(|c| *c == b'"' || *c == b'\\' || *c < 0x20)?;
    if b[start + len] != b'"' {
        return None;
    }
    *i = start + len + 1;
    std::str::from_utf8(&b[start..start + len]).ok()
}

/// A CSV cell as the most specific value it spells: integer, float, boolean, empty as null.
pub fn csv_value(cell: &str) -> Value {
    if cell.is_empty() {
        return Value::Null;
    }
    if let Ok(i) = cell.parse::<i64>() {
        return Value::Int(i);
    }
    if let Ok(f) = cell.parse::<f64>() {
        if f.is_finite() {
            return Value::Float(f);
        }
    }
    match cell {
        "true" | "TRUE" | "True" => Value::Bool(true),
        "false" | "FALSE" | "False" => Value::Bool(false),
        _ => Value::str(cell),
    }
}

/// Builds a row from a CSV record and its header.
pub fn decode_csv(header: &[Arc<str>], record: &csv::StringRecord) -> Result<Row, String> {
    if record.len() != header.len() {
        return Err(format!(
            "{} fields, but the header names {}",
            record.len(),
            header.len()
        ));
    }
    Ok(header
        .iter()
        .cloned()
        .zip(record.iter().map(csv_value))
        .collect())
}

/// Decodes message payloads (one MQTT, AMQP, NATS or HTTP message each) into rows, by the
/// stream's `format`, `header` and `delimiter` options.
#[derive(Debug, Clone)]
pub struct MessageDecoder {
    format: Format,
    /// The CSV options; without a `header`, the first message names the columns.
    csv: CsvOptions,
}

impl MessageDecoder {
    /// A decoder of message payloads in the format the stream's options name.
    pub fn new(options: &std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        Ok(MessageDecoder {
            format: Format::of_messages(options)?,
            csv: CsvOptions::from_options(options)?,
        })
    }

    /// Names how this decoder reads payloads: decoders with the same name make the same rows
    /// of every payload, so what one decoded can serve the others. `None` for a CSV decoder
    /// that is still to learn its header from the first message it reads.
    pub fn sharing_key(&self) -> Option<String> {
        match self.format {
            Format::Csv => {
                let header = self.csv.header.as_ref()?;
                Some(format!("csv {} {header:?}", self.csv.delimiter))
            }
            f => Some(format!("{f:?}")),
        }
    }

    /// Rows of one payload: a JSON object, a JSON array of objects, or CSV records. Each
    /// `Err` says why a record cannot be an event.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<Result<Row, String>>) {
        match self.format {
            Format::JsonLines => {
                let trimmed = payload.trim_ascii_start();
                if trimmed.first() == Some(&b'[') {
                    match serde_json::from_slice::<Vec<serde_json::Value>>(trimmed) {
                        Ok(items) => out.extend(items.iter().map(|v| {
                            serde_json::to_vec(v)
                                .map_err(|e| e.to_string())
                                .and_then(|b| decode_json(&b))
                        })),
                        Err(e) => out.push(Err(format!("invalid JSON array: {e}"))),
                    }
                } else {
                    out.push(decode_json(payload));
                }
            }
            Format::Debs2012 => {
                for line in payload.split(|c| *c == b'\n') {
                    if !line.trim_ascii().is_empty() {
                        crate::debs::decode_line(line, out);
                    }
                }
            }
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .delimiter(self.csv.delimiter)
                    .from_reader(payload);
                for record in reader.records() {
                    match (record, &self.csv.header) {
                        (Err(e), _) => out.push(Err(e.to_string())),
                        (Ok(r), Some(h)) => out.push(decode_csv(h, &r)),
                        (Ok(r), None) => self.csv.header = Some(r.iter().map(intern).collect()),
                    }
                }
            }
        }
    }
}

/// Writes a row as one JSON line.
pub fn encode_json(row: &Row, w: &mut impl Write) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, row)?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_decode_by_format() {
        let opts = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut out = Vec::new();
        let mut json = MessageDecoder::new(&opts(&[])).unwrap();
        json.decode(br#"[{"a":1},{"a":2},3]"#, &mut out);
        json.decode(br#"{"a":"#, &mut out);
        assert_eq!(out.iter().filter(|r| r.is_ok()).count(), 2);
        assert_eq!(out.len(), 4);
        out.clear();
        let mut csv = MessageDecoder::new(&opts(&[("format", "csv")])).unwrap();
        csv.decode(b"id;v", &mut out);
        assert!(out.is_empty(), "the first message is the header");
        let mut csv = MessageDecoder::new(&opts(&[
            ("format", "csv"),
            ("header", "id;v"),
            ("delimiter", ";"),
        ]))
        .unwrap();
        csv.decode(b"1;2.5\n2;x\n3", &mut out);
        assert_eq!(out[0].as_ref().unwrap().get("v"), Some(&Value::Float(2.5)));
        assert!(out[2].is_err());
        assert!(MessageDecoder::new(&opts(&[("format", "xml")])).is_err());
    }

    #[test]
    fn csv_cells_take_their_types() {
        assert_eq!(csv_value("12"), Value::Int(12));
        assert_eq!(csv_value("1.5"), Value::Float(1.5));
        assert_eq!(csv_value("true"), Value::Bool(true));
        assert_eq!(csv_value(""), Value::Null);
        assert_eq!(csv_value("bm05"), Value::str("bm05"));
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_parser() {
        let lines: [&[u8]; 9] = [
            br#"{"sensor_id":224,"ts":1700000000000,"value":68.189,"flag":false}"#,
            br#" { "a" : "x y" , "b" : null, "c": -1.5e3, "d": true } "#,
            br#"{}"#,
            br#"{"s":"caf\u00e9","n":{"x":1}}"#,
            br#"{"a":1,"a":2}"#,
            br#"{"big":123456789012345678901234}"#,
            br#"{"a":1,}"#,
            br#"{"a":1} trailing"#,
            br#"[1,2]"#,
        ];
        for l in lines {
            let full = parse_json_row(l);
            assert_eq!(decode_json(l), full, "{}", String::from_utf8_lossy(l));
            if let Some(fast) = flat_object(l) {
                assert_eq!(Ok(fast), full);
            }
        }
        assert!(flat_object(lines[0]).is_some());
        assert!(flat_object(lines[3]).is_none());
    }

    #[test]
    fn formats() {
        assert_eq!(Format::choose(None, "x.csv"), Ok(Format::Csv));
        assert_eq!(Format::choose(None, "-"), Ok(Format::JsonLines));
        assert_eq!(Format::choose(Some("json"), "x.csv"), Ok(Format::JsonLines));
        assert!(Format::choose(Some("avro"), "x").is_err());
    }
}
