//! The DEBS 2012 Grand Challenge format (`format = 'debs2012'`): tab-separated records of 56
//! fields, CRLF, no header, ISO-8601 UTC time stamps with 100 ns ticks (see
//! `../shared/data/README.md`). A record becomes a row with the published field names; `ts` is
//! the event time in epoch milliseconds and `ts_ns` keeps the full precision.
//!
//! The full data set has lines where a line break is missing, so two records share one line:
//! the last field of the first runs into the time stamp of the second. Such lines are split
//! back into their records. Time stamps that go backwards are kept as they are (event time
//! makes them late, where a window has already closed).

use std::sync::{Arc, OnceLock};

use chrono::DateTime;
use weir_core::{Row, Value};

/// Fields per record.
pub const FIELDS: usize = 56;

/// The field names, in column order.
pub fn names() -> &'static [Arc<str>] {
    static NAMES: OnceLock<Vec<Arc<str>>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut n: Vec<String> = ["ts", "index", "mf01", "mf02", "mf03"]
            .iter()
            .chain(&["pc13", "pc14", "pc15", "pc25", "pc26", "pc27", "res"])
            .chain(&["bm05", "bm06", "bm07", "bm08", "bm09", "bm10"])
            .map(|s| s.to_string())
            .collect();
        n.extend((1..=36).map(|i| format!("pp{i:02}")));
        n.extend(["pc01".to_owned(), "pc02".to_owned()]);
        n.into_iter().map(Arc::from).collect()
    })
}

/// The name of the nanosecond time field added to each record.
fn ts_ns() -> &'static Arc<str> {
    static NAME: OnceLock<Arc<str>> = OnceLock::new();
    NAME.get_or_init(|| Arc::from("ts_ns"))
}

/// Where, inside a field, a time stamp that a missing line break glued on begins.
fn glued_time_stamp(field: &str) -> Option<usize> {
    let b = field.as_bytes();
    (1..b.len().saturating_sub(10)).find(|&p| {
        let t = &b[p..p + 11];
        t[..4].iter().all(u8::is_ascii_digit)
            && t[4] == b'-'
            && t[5..7].iter().all(u8::is_ascii_digit)
            && t[7] == b'-'
            && t[8..10].iter().all(u8::is_ascii_digit)
            && t[10] == b'T'
    })
}

/// The records of one line (usually one; more where line breaks are missing).
pub fn decode_line(line: &[u8], out: &mut Vec<Result<Row, String>>) {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t.trim_end_matches(['\r', '\n']),
        Err(e) => return out.push(Err(format!("not UTF-8 text: {e}"))),
    };
    let mut fields: Vec<&str> = text.split('\t').collect();
    while fields.len() > FIELDS {
        let last = fields[FIELDS - 1];
        let Some(p) = glued_time_stamp(last) else {
            return out.push(Err(format!(
                "{} fields, not {FIELDS}, and no second record starts in field {FIELDS}",
                fields.len()
            )));
        };
        let mut record = fields[..FIELDS - 1].to_vec();
        record.push(&last[..p]);
        out.push(record_row(&record));
        let mut rest = vec![&last[p..]];
        rest.extend_from_slice(&fields[FIELDS..]);
        fields = rest;
    }
    out.push(record_row(&fields));
}

fn record_row(fields: &[&str]) -> Result<Row, String> {
    if fields.len() != FIELDS {
        return Err(format!("{} fields, not {FIELDS}", fields.len()));
    }
    let ts = DateTime::parse_from_rfc3339(fields[0]).map_err(|e| {
        format!(
            "field ts: '{}' is not an ISO-8601 time stamp: {e}",
            fields[0]
        )
    })?;
    let ns = ts
        .timestamp_nanos_opt()
        .ok_or_else(|| format!("field ts: '{}' is out of range", fields[0]))?;
    let names = names();
    let mut row = Row::with_capacity(FIELDS + 1);
    row.push(names[0].clone(), Value::Int(ns.div_euclid(1_000_000)));
    row.push(ts_ns().clone(), Value::Int(ns));
    for (name, f) in names.iter().zip(fields).skip(1) {
        let v: i64 = f
            .trim()
            .parse()
            .map_err(|_| format!("field {name}: '{f}' is not an integer"))?;
        row.push(name.clone(), Value::Int(v));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real sample in `../shared/data` beside the repository (or where `WEIR_SHARED_DATA`
    /// says; a clone elsewhere on the machine finds the workspace's copy).
    fn sample() -> std::path::PathBuf {
        let beside = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
        [
            std::env::var("WEIR_SHARED_DATA").ok().map(Into::into),
            Some(beside),
            Some("/work/shared/data".into()),
        ]
        .into_iter()
        .flatten()
        .map(|d: std::path::PathBuf| d.join("debs2012-sample.tsv"))
        .find(|p| p.exists())
        .expect("the DEBS 2012 sample: set WEIR_SHARED_DATA to the shared data directory")
    }

    fn decode(text: &str) -> Vec<Result<Row, String>> {
        let mut out = Vec::new();
        for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
            decode_line(line.as_bytes(), &mut out);
        }
        out
    }

    #[test]
    fn the_real_sample_reads_completely() {
        let text = std::fs::read_to_string(sample()).unwrap();
        let rows: Vec<Row> = decode(&text).into_iter().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 17_000);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.get("index"), Some(&Value::Int(2_556_001 + i as i64)));
        }
        let first = &rows[0];
        // 2012-02-22T16:46:28.9670320+00:00
        assert_eq!(first.get("ts"), Some(&Value::Int(1_329_929_188_967)));
        assert_eq!(
            first.get("ts_ns"),
            Some(&Value::Int(1_329_929_188_967_032_000))
        );
        assert_eq!(first.get("mf01"), Some(&Value::Int(13_056)));
        assert_eq!(first.get("pc13"), Some(&Value::Int(71)));
        assert_eq!(first.get("pc02"), Some(&Value::Int(0)));
        assert_eq!(first.len(), FIELDS + 1);
    }

    #[test]
    fn damaged_lines_are_split_or_refused_with_the_reason() {
        let zeros = vec!["0"; 54].join("\t");
        let record = |ts: &str, index: u32| format!("{ts}\t{index}\t{zeros}");
        let a = record("2012-02-22T16:46:28.9670320+00:00", 1);
        let b = record("2012-02-22T16:46:28.9770284+00:00", 2);
        // A missing line break: the last field of `a` runs into the time stamp of `b`.
        let joined = decode(&format!("{a}{b}\r\n"));
        let idx: Vec<_> = joined
            .iter()
            .map(|r| r.as_ref().unwrap().get("index").cloned())
            .collect();
        assert_eq!(idx, vec![Some(Value::Int(1)), Some(Value::Int(2))]);
        // Time going backwards is kept as it is.
        let back = decode(&format!("{b}\r\n{a}\r\n"));
        assert!(back.iter().all(Result::is_ok));
        // Too few fields, a bad time stamp, a bad number.
        let short = decode("2012-02-22T16:46:28.9670320+00:00\t1\t2\r\n");
        assert!(short[0].as_ref().unwrap_err().contains("3 fields"));
        let bad_ts = decode(&record("yesterday", 3));
        assert!(bad_ts[0].as_ref().unwrap_err().contains("field ts"));
        let bad_num = decode(&a.replacen("\t0\t", "\tx\t", 1));
        assert!(bad_num[0].as_ref().unwrap_err().contains("not an integer"));
        let glued_garbage = decode(&format!("{a}\tmore"));
        assert!(glued_garbage[0].as_ref().unwrap_err().contains("57 fields"));
    }
}
