//! Codecs: JSON lines and CSV in, JSON lines out.

use std::io::Write;
use std::sync::Arc;

use weir_core::{parse_json_row, Row, Value};

/// The formats a file connector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
}

impl Format {
    /// From a stream's `format` option, else from the file name.
    pub fn choose(option: Option<&str>, path: &str) -> Result<Format, String> {
        match option.map(str::to_ascii_lowercase).as_deref() {
            Some("json") | Some("jsonl") | Some("ndjson") => Ok(Format::JsonLines),
            Some("csv") => Ok(Format::Csv),
            Some(other) => Err(format!(
                "format '{other}' is not supported by the file connector; use json or csv"
            )),
            None if path.to_ascii_lowercase().ends_with(".csv") => Ok(Format::Csv),
            None => Ok(Format::JsonLines),
        }
    }
}

/// Decodes one JSON line into a row.
pub fn decode_json(line: &[u8]) -> Result<Row, String> {
    parse_json_row(line)
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

/// Writes a row as one JSON line.
pub fn encode_json(row: &Row, w: &mut impl Write) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, row)?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_take_their_types() {
        assert_eq!(csv_value("12"), Value::Int(12));
        assert_eq!(csv_value("1.5"), Value::Float(1.5));
        assert_eq!(csv_value("true"), Value::Bool(true));
        assert_eq!(csv_value(""), Value::Null);
        assert_eq!(csv_value("bm05"), Value::str("bm05"));
    }

    #[test]
    fn formats() {
        assert_eq!(Format::choose(None, "x.csv"), Ok(Format::Csv));
        assert_eq!(Format::choose(None, "-"), Ok(Format::JsonLines));
        assert_eq!(Format::choose(Some("json"), "x.csv"), Ok(Format::JsonLines));
        assert!(Format::choose(Some("avro"), "x").is_err());
    }
}
