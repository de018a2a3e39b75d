//! Column types of typed streams and `CAST` targets.

use std::fmt;
use std::sync::Arc;

use weir_core::Value;

/// The SQL types weir knows. Timestamps are epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// `BOOLEAN`
    Boolean,
    /// `BIGINT`
    BigInt,
    /// `DOUBLE`
    Double,
    /// `STRING` (or `VARCHAR`, `TEXT`, `CHAR`)
    String,
    /// `TIMESTAMP`, as epoch milliseconds.
    Timestamp,
    /// Arrays, objects, JSON: any value, left as it is.
    Any,
}

impl DataType {
    /// Maps a SQL type name to a weir type; `None` for names weir does not know.
    pub fn from_sql(name: &str) -> Option<DataType> {
        let base = name
            .split(['(', '<', ' '])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        Some(match base.as_str() {
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "INT" | "INTEGER" | "BIGINT" | "SMALLINT" | "TINYINT" | "INT64" | "INT32" | "LONG" => {
                DataType::BigInt
            }
            "DOUBLE" | "FLOAT" | "REAL" | "DECIMAL" | "NUMERIC" | "FLOAT64" | "FLOAT32" => {
                DataType::Double
            }
            "VARCHAR" | "STRING" | "TEXT" | "CHAR" | "CHARACTER" => DataType::String,
            "TIMESTAMP" | "DATETIME" | "TIMESTAMP_LTZ" => DataType::Timestamp,
            "JSON" | "ARRAY" | "MAP" | "ROW" | "STRUCT" | "OBJECT" | "ANY" => DataType::Any,
            _ => return None,
        })
    }

    /// Whether a value already has this type (null fits every type).
    pub fn holds(&self, v: &Value) -> bool {
        matches!(
            (self, v),
            (_, Value::Null)
                | (DataType::Any, _)
                | (DataType::Boolean, Value::Bool(_))
                | (DataType::BigInt | DataType::Timestamp, Value::Int(_))
                | (DataType::Double, Value::Float(_))
                | (DataType::String, Value::Str(_))
        )
    }

    /// An input value for a column of this type, converted only where nothing is lost: a
    /// number that does not fit (`1.5` or `1e20` for a BIGINT, a time outside the years 1 to
    /// 9999) is refused with the reason, so the record goes to the dead letters rather than in
    /// with another value. `CAST` converts more freely ([`DataType::cast`]).
    pub fn accept(&self, v: &Value) -> Result<Value, String> {
        if v.is_null() {
            return Ok(Value::Null);
        }
        let whole = |f: f64, what: &str| -> Result<i64, String> {
            if !f.is_finite() || f.fract() != 0.0 {
                Err(format!("{f} is not a whole number, as a {what} must be"))
            } else if f.abs() >= 9_223_372_036_854_775_808.0 {
                Err(format!("{f} does not fit a {what} (64-bit)"))
            } else {
                Ok(f as i64)
            }
        };
        let number = |s: &str| -> Option<f64> { s.trim().parse::<f64>().ok() };
        match (self, v) {
            (DataType::BigInt, Value::Float(f)) => whole(*f, "BIGINT").map(Value::Int),
            (DataType::BigInt, Value::Str(s)) => match s.trim().parse::<i64>() {
                Ok(i) => Ok(Value::Int(i)),
                Err(_) => match number(s) {
                    Some(f) => whole(f, "BIGINT").map(Value::Int),
                    None => self.cast(v),
                },
            },
            (DataType::Double, _)
                if !self
                    .cast(v)
                    .is_ok_and(|c| c.as_f64().is_some_and(f64::is_finite)) =>
            {
                self.cast(v)?;
                Err(format!("{v} is not a finite number"))
            }
            (DataType::Timestamp, _) => {
                let t = match v {
                    Value::Float(f) => whole(*f, "TIMESTAMP (epoch milliseconds)")?,
                    other => match self.cast(other)? {
                        Value::Int(t) => t,
                        _ => return Err(format!("{v} is not a time")),
                    },
                };
                if weir_core::EVENT_TIME_RANGE.contains(&t) {
                    Ok(Value::Int(t))
                } else {
                    Err(format!(
                        "{t} ms lies outside the years 1 to 9999 that a TIMESTAMP covers"
                    ))
                }
            }
            _ => self.cast(v),
        }
    }

    /// Converts a value to this type; `Err` with the reason when it cannot be.
    pub fn cast(&self, v: &Value) -> Result<Value, String> {
        if v.is_null() {
            return Ok(Value::Null);
        }
        let fail = || format!("cannot cast {} {} to {}", v.type_name(), v, self);
        Ok(match (self, v) {
            (DataType::Any, v) => v.clone(),
            (DataType::Boolean, Value::Bool(_)) => v.clone(),
            (DataType::Boolean, Value::Int(i)) => Value::Bool(*i != 0),
            (DataType::Boolean, Value::Str(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" => Value::Bool(true),
                "false" | "f" | "0" | "no" => Value::Bool(false),
                _ => return Err(fail()),
            },
            (DataType::BigInt, Value::Int(_)) => v.clone(),
            (DataType::BigInt, Value::Float(f)) if f.is_finite() => Value::Int(f.trunc() as i64),
            (DataType::BigInt, Value::Bool(b)) => Value::Int(*b as i64),
            (DataType::BigInt, Value::Str(s)) => match s.trim().parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => match s.trim().parse::<f64>() {
                    Ok(f) if f.is_finite() => Value::Int(f.trunc() as i64),
                    _ => return Err(fail()),
                },
            },
            (DataType::Double, Value::Int(i)) => Value::Float(*i as f64),
            (DataType::Double, Value::Float(_)) => v.clone(),
            (DataType::Double, Value::Bool(b)) => Value::Float(*b as i64 as f64),
            (DataType::Double, Value::Str(s)) => {
                Value::Float(s.trim().parse::<f64>().map_err(|_| fail())?)
            }
            (DataType::String, Value::Str(_)) => v.clone(),
            (DataType::String, v) => Value::Str(Arc::from(v.to_text())),
            (DataType::Timestamp, Value::Int(_)) => v.clone(),
            (DataType::Timestamp, Value::Float(f)) => Value::Int(*f as i64),
            (DataType::Timestamp, Value::Str(s)) => {
                Value::Int(crate::functions::parse_timestamp(s).ok_or_else(fail)?)
            }
            _ => return Err(fail()),
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataType::Boolean => "BOOLEAN",
            DataType::BigInt => "BIGINT",
            DataType::Double => "DOUBLE",
            DataType::String => "STRING",
            DataType::Timestamp => "TIMESTAMP",
            DataType::Any => "ANY",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts() {
        assert_eq!(DataType::BigInt.cast(&Value::str("42")), Ok(Value::Int(42)));
        assert_eq!(DataType::Double.cast(&Value::Int(2)), Ok(Value::Float(2.0)));
        assert_eq!(
            DataType::String.cast(&Value::Float(1.5)),
            Ok(Value::str("1.5"))
        );
        assert_eq!(
            DataType::Timestamp.cast(&Value::str("2023-11-14T22:13:20Z")),
            Ok(Value::Int(1_700_000_000_000))
        );
        assert!(DataType::BigInt.cast(&Value::str("x")).is_err());
        // Input is taken only where nothing is lost.
        assert_eq!(
            DataType::BigInt.accept(&Value::Float(3.0)),
            Ok(Value::Int(3))
        );
        assert!(DataType::BigInt
            .accept(&Value::Float(1.5))
            .unwrap_err()
            .contains("whole"));
        assert!(DataType::BigInt
            .accept(&Value::Float(1e20))
            .unwrap_err()
            .contains("fit"));
        assert!(DataType::BigInt.accept(&Value::str("1.5")).is_err());
        assert_eq!(
            DataType::BigInt.accept(&Value::str(" 42 ")),
            Ok(Value::Int(42))
        );
        assert!(DataType::Timestamp
            .accept(&Value::Int(i64::MIN))
            .unwrap_err()
            .contains("9999"));
        assert!(DataType::Double.accept(&Value::str("NaN")).is_err());
        assert_eq!(
            DataType::Double.accept(&Value::Int(2)),
            Ok(Value::Float(2.0))
        );
        assert_eq!(DataType::Timestamp.accept(&Value::Null), Ok(Value::Null));
        assert_eq!(DataType::from_sql("varchar(20)"), Some(DataType::String));
        assert_eq!(DataType::from_sql("blob"), None);
    }
}
