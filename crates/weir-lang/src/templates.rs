//! Rule templates: the parameterised rules of seed paper 001 (its `jobType`s). Instantiating a
//! template writes an ordinary rule in the language, so a template rule is checked, planned and
//! run like any other, and `GET /v1/rules/{id}` shows the SQL it became.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::expr::PathSeg;
use crate::functions::parse_json_path;

/// One parameter of a template.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Param {
    /// The parameter's name.
    pub name: &'static str,
    /// Whether it must be given.
    pub required: bool,
    /// What it is for.
    pub doc: &'static str,
}

/// A parameterised rule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Template {
    /// The template's name.
    pub name: &'static str,
    /// What the rule does.
    pub description: &'static str,
    /// Its parameters.
    pub params: &'static [Param],
}

const fn p(name: &'static str, required: bool, doc: &'static str) -> Param {
    Param {
        name,
        required,
        doc,
    }
}

const STREAMS: [Param; 2] = [
    p("input", true, "the stream the rule reads"),
    p("output", true, "the stream the rule writes"),
];
const FIELD: [Param; 2] = [
    p(
        "fieldName",
        false,
        "the field to test or aggregate (or give fieldJsonPath)",
    ),
    p(
        "fieldJsonPath",
        false,
        "a JSON path to the field, e.g. $.sensor.temperature",
    ),
];

/// The parameters of both windowed aggregations.
const AGGREGATION: [Param; 6] = [
    STREAMS[0],
    STREAMS[1],
    FIELD[0],
    FIELD[1],
    p("window", true, "the window length, e.g. '5 seconds'"),
    p(
        "groupBy",
        false,
        "a field whose values get windows of their own",
    ),
];

/// Every template.
pub const TEMPLATES: &[Template] = &[
    Template {
        name: "single-filter",
        description: "SELECT * FROM input WHERE field <condition> threshold",
        params: &[
            STREAMS[0],
            STREAMS[1],
            FIELD[0],
            FIELD[1],
            p("condition", true, "one of >, >=, =, <, <=, != (or <>)"),
            p(
                "threshold",
                true,
                "a number or a string to compare the field with",
            ),
        ],
    },
    Template {
        name: "sum-aggregation",
        description: "the sum of a field over tumbling time windows, optionally per key",
        params: &AGGREGATION,
    },
    Template {
        name: "avg-aggregation",
        description: "the average of a field over tumbling time windows, optionally per key",
        params: &AGGREGATION,
    },
    Template {
        name: "single-join",
        description: "pairs of events of two streams with equal keys at most `window` apart",
        params: &[
            STREAMS[0],
            p("joinInput", true, "the second stream"),
            STREAMS[1],
            p(
                "key",
                false,
                "the key field, when both streams name it alike",
            ),
            p("leftKey", false, "the key field of input (instead of key)"),
            p(
                "rightKey",
                false,
                "the key field of joinInput (instead of key)",
            ),
            p(
                "window",
                true,
                "how far apart in time two events may be, e.g. '1 minute'",
            ),
        ],
    },
];

/// Why a template could not be instantiated; every problem at once.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct TemplateError(pub Vec<String>);

/// The template called `name`.
pub fn find(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

/// The rule text for `template` with `args` (stream names and the template's parameters).
pub fn instantiate(template: &str, args: &BTreeMap<String, Json>) -> Result<String, TemplateError> {
    let Some(t) = find(template) else {
        let names: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
        return Err(TemplateError(vec![format!(
            "unknown template '{template}'; templates: {}",
            names.join(", ")
        )]));
    };
    let mut a = Args {
        args,
        problems: Vec::new(),
    };
    for k in args.keys() {
        if !t.params.iter().any(|p| p.name == k) {
            let names: Vec<&str> = t.params.iter().map(|p| p.name).collect();
            a.problems.push(format!(
                "{template} takes no parameter '{k}'; it takes {}",
                names.join(", ")
            ));
        }
    }
    let input = a.ident("input");
    let output = a.ident("output");
    let sql = match t.name {
        "single-filter" => {
            let field = a.field();
            let cond = match a.text("condition").as_deref() {
                Some(c @ (">" | ">=" | "=" | "<" | "<=" | "!=" | "<>")) => c.to_owned(),
                Some(other) => {
                    a.problems.push(format!(
                        "condition '{other}' is not one of >, >=, =, <, <=, !="
                    ));
                    String::new()
                }
                None => String::new(),
            };
            let threshold = a.literal("threshold");
            format!(
                "INSERT INTO {output}\nSELECT * FROM {input}\nWHERE {field} {cond} {threshold};\n"
            )
        }
        "sum-aggregation" | "avg-aggregation" => {
            let func = &t.name[..3];
            let field = a.field();
            let window = a.duration("window");
            let (key_sel, key_group) = match a.args.contains_key("groupBy") {
                true => {
                    let k = a.path("groupBy");
                    (format!("{k} AS key, "), format!("{k}, "))
                }
                false => (String::new(), String::new()),
            };
            format!(
                "INSERT INTO {output}\nSELECT {key_sel}window_start, window_end, {func}({field}) AS {func}, count(*) AS count\nFROM {input}\nGROUP BY {key_group}TUMBLE(rowtime, INTERVAL {window});\n"
            )
        }
        _ => {
            let right = a.ident("joinInput");
            let (lk, rk) = match (a.args.contains_key("key"), a.args.contains_key("leftKey")) {
                (true, _) => (a.path("key"), a.path("key")),
                (false, true) => (a.path("leftKey"), a.path("rightKey")),
                (false, false) => {
                    a.problems
                        .push("single-join needs key, or leftKey and rightKey".to_owned());
                    (String::new(), String::new())
                }
            };
            let window = a.duration("window");
            format!(
                "INSERT INTO {output}\nSELECT *\nFROM {input} AS l JOIN {right} AS r\n  ON l.{lk} = r.{rk}\n AND r.rowtime BETWEEN l.rowtime - INTERVAL {window} AND l.rowtime + INTERVAL {window};\n"
            )
        }
    };
    for p in t.params.iter().filter(|p| p.required) {
        if !args.contains_key(p.name) {
            a.problems.push(format!(
                "{template} needs parameter '{}' ({})",
                p.name, p.doc
            ));
        }
    }
    if a.problems.is_empty() {
        Ok(sql)
    } else {
        Err(TemplateError(a.problems))
    }
}

/// Reads and quotes arguments, collecting what is wrong with them.
struct Args<'a> {
    args: &'a BTreeMap<String, Json>,
    problems: Vec<String>,
}

impl Args<'_> {
    fn text(&mut self, name: &str) -> Option<String> {
        match self.args.get(name) {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Number(n)) => Some(n.to_string()),
            Some(other) => {
                self.problems
                    .push(format!("parameter '{name}' must be text, not {other}"));
                None
            }
            None => None,
        }
    }

    /// A stream name: a plain identifier.
    fn ident(&mut self, name: &str) -> String {
        let Some(text) = self.text(name) else {
            return String::new();
        };
        if is_plain_ident(&text) {
            text
        } else {
            self.problems.push(format!(
                "parameter '{name}': '{text}' is not a stream name (letters, digits and _)"
            ));
            String::new()
        }
    }

    /// A field given as a name or a JSON path.
    fn path(&mut self, name: &str) -> String {
        let Some(text) = self.text(name) else {
            return String::new();
        };
        match json_path_to_sql(&text) {
            Some(p) => p,
            None => {
                self.problems.push(format!(
                    "parameter '{name}': '{text}' is not a field name or JSON path"
                ));
                String::new()
            }
        }
    }

    /// The template's field: `fieldJsonPath` if given, else `fieldName`.
    fn field(&mut self) -> String {
        if self.args.contains_key("fieldJsonPath") {
            self.path("fieldJsonPath")
        } else if self.args.contains_key("fieldName") {
            self.path("fieldName")
        } else {
            self.problems
                .push("give the field as fieldName or fieldJsonPath".to_owned());
            String::new()
        }
    }

    /// A number or a string literal.
    fn literal(&mut self, name: &str) -> String {
        match self.args.get(name) {
            Some(Json::Number(n)) => n.to_string(),
            Some(Json::String(s)) => format!("'{}'", s.replace('\'', "''")),
            Some(Json::Bool(b)) => b.to_string(),
            Some(other) => {
                self.problems.push(format!(
                    "parameter '{name}' must be a number or a string, not {other}"
                ));
                String::new()
            }
            None => String::new(),
        }
    }

    /// A duration as an interval literal's text.
    fn duration(&mut self, name: &str) -> String {
        let Some(text) = self.text(name) else {
            return String::new();
        };
        match weir_core::parse_duration(&text) {
            Ok(ms) if ms > 0 => format!("'{ms}' MILLISECOND"),
            _ => {
                self.problems.push(format!(
                    "parameter '{name}': '{text}' is not a positive duration such as '5 seconds'"
                ));
                String::new()
            }
        }
    }
}

fn is_plain_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A field name as written in a rule: bare when it can be, else double-quoted.
fn quote_ident(s: &str) -> String {
    if is_plain_ident(s) {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// `$.a.b[0]` (or `a.b`) as a field path of the language: `"a"['b'][0]`.
pub fn json_path_to_sql(path: &str) -> Option<String> {
    let segs = parse_json_path(path)?;
    let mut out = String::new();
    for (i, seg) in segs.iter().enumerate() {
        match (i, seg) {
            (0, PathSeg::Key(k)) => out.push_str(&quote_ident(k)),
            (0, PathSeg::Index(_)) => return None,
            (_, PathSeg::Key(k)) => out.push_str(&format!("['{}']", k.replace('\'', "''"))),
            (_, PathSeg::Index(n)) => out.push_str(&format!("[{n}]")),
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Json) -> BTreeMap<String, Json> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_template_compiles() {
        let decl = "CREATE STREAM a WITH (topic = 'a'); CREATE STREAM b WITH (topic = 'b');\n";
        let cases = [
            (
                "single-filter",
                json!({"input": "a", "output": "o", "fieldJsonPath": "$.sensor['t x'][0]", "condition": ">=", "threshold": 20.5}),
            ),
            (
                "single-filter",
                json!({"input": "a", "output": "o", "fieldName": "state", "condition": "=", "threshold": "it's on"}),
            ),
            (
                "sum-aggregation",
                json!({"input": "a", "output": "o", "fieldName": "v", "window": "5 seconds"}),
            ),
            (
                "avg-aggregation",
                json!({"input": "a", "output": "o", "fieldName": "v", "window": "1m", "groupBy": "machine"}),
            ),
            (
                "single-join",
                json!({"input": "a", "joinInput": "b", "output": "o", "key": "id", "window": "10 s"}),
            ),
        ];
        for (name, a) in cases {
            let sql = instantiate(name, &args(a)).unwrap();
            crate::compile(&format!("{decl}{sql}"))
                .unwrap_or_else(|e| panic!("{name}: {sql}\n{}", e.render("t", &sql)));
        }
    }

    #[test]
    fn every_problem_is_reported() {
        let err = instantiate(
            "single-filter",
            &args(json!({"input": "a", "condition": "~", "colour": 1})),
        )
        .unwrap_err();
        let text = err.to_string();
        for part in [
            "'colour'",
            "condition '~'",
            "'output'",
            "fieldName or fieldJsonPath",
            "'threshold'",
        ] {
            assert!(text.contains(part), "{part} missing from: {text}");
        }
        assert!(instantiate("nope", &BTreeMap::new()).is_err());
    }
}
