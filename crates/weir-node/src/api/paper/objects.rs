//! The seed paper's JSON objects (installation, jobinfo, relocation), checked strictly — a
//! misspelled key is refused, never ignored — and an installation's connectors turned into the
//! `CREATE STREAM`s of its job.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::node::NodeError;

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    pub runtime: String,
    /// The node to install on, by name or by URL.
    #[serde(default)]
    pub target_resource: Option<String>,
    pub job_type: String,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobConfig {
    #[serde(default)]
    pub connectors: Map<String, Value>,
    /// The paper's figure nests jobProps here in one place and beside jobConfig in another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_props: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Installation {
    pub headers: Headers,
    /// The paper's prose calls it jobConfigs.
    #[serde(default, alias = "jobConfigs")]
    pub job_config: JobConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_props: Option<Map<String, Value>>,
}

/// The paper's jobinfo object, and where the job runs. Requests may send back everything an
/// answer held; only `jobId` matters in them.
#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobInfo {
    #[serde(default)]
    pub runtime: String,
    pub job_id: String,
    #[serde(default)]
    pub job_type: String,
    #[serde(default)]
    pub job_status: String,
    #[serde(default)]
    pub config_file_name: String,
    /// The URL of the node the job is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_resource: Option<String>,
    /// The name of the node the job is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What jobStatus alone does not say: why a job stopped, or why a running one takes no
    /// input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Relocation {
    #[serde(rename = "target_runtime", alias = "targetRuntime")]
    pub target_runtime: String,
    /// The node to move to, by name or by URL.
    #[serde(default)]
    pub target_resource: Option<String>,
    pub job_info: JobInfo,
}

/// The sides of a job, the parameter of its template each fills, and the suffix of the
/// stream each becomes.
const SIDES: [(&str, &str); 3] = [("input", "in"), ("output", "out"), ("joinInput", "join")];

/// What each side's connector fields may say, after the side's name.
const FIELDS: [&str; 7] = [
    "Endpoint",
    "EndPoint",
    "Topic",
    "Subject",
    "Exchange",
    "Queue",
    "RoutingKey",
];

/// The streams of a job, as `(stream name, side)`.
pub fn job_streams(id: &str, job_type: &str) -> Vec<(String, &'static str)> {
    SIDES
        .iter()
        .filter(|(side, _)| *side != "joinInput" || job_type == "single-join")
        .map(|(side, suffix)| (format!("{id}_{suffix}"), *side))
        .collect()
}

/// Every problem with an installation's connectors and jobProps, in the paper's terms: keys
/// that are no connector field, sides the job does not have, sides it has without a broker
/// or topic (a job that would read or write nothing anyone else sees), streams set in jobProps.
pub fn check(
    job_type: &str,
    connectors: &Map<String, Value>,
    props: &Map<String, Value>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let sides: Vec<&str> = SIDES
        .iter()
        .map(|s| s.0)
        .filter(|s| *s != "joinInput" || job_type == "single-join")
        .collect();
    for key in connectors.keys() {
        let known = SIDES.iter().find_map(|(side, _)| {
            let field = key.strip_prefix(side)?;
            FIELDS.contains(&field).then_some(*side)
        });
        match known {
            Some(side) if sides.contains(&side) => {}
            Some(side) => problems.push(format!(
                "jobConfig.connectors.{key}: a {job_type} job has no {side}"
            )),
            None => problems.push(format!(
                "jobConfig.connectors.{key} is not a connector field; each of {} takes {}",
                sides.join(", "),
                FIELDS.join(", ")
            )),
        }
    }
    for side in &sides {
        let given = |f: &str| connectors.contains_key(&format!("{side}{f}"));
        if !(given("Endpoint") || given("EndPoint") || given("Topic")) {
            problems.push(format!(
                "the job's {side} has no broker: set jobConfig.connectors.{side}Endpoint (amqp://, mqtt://, nats:// or http:// URL), or {side}Topic for a topic of the node's own broker"
            ));
        }
    }
    for (side, _) in SIDES {
        if props.contains_key(side) {
            problems.push(format!(
                "jobProps.{side}: a job's streams come from jobConfig.connectors, not jobProps"
            ));
        }
    }
    problems
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// `CREATE STREAM` for one side of a job from its connector fields: the endpoint's URL scheme
/// picks the connector.
pub fn stream_sql(name: &str, side: &str, c: &Map<String, Value>) -> Result<String, String> {
    let field = |f: &str| -> Result<Option<String>, String> {
        let key = format!("{side}{f}");
        // The paper writes both inputEndpoint and inputEndPoint.
        let alt = format!("{side}{}", f.replace("Endpoint", "EndPoint"));
        match c.get(&key).or_else(|| c.get(&alt)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "jobConfig.connectors.{key} must be a string, not {other}"
            )),
        }
    };
    let mut opts: Vec<(String, String)> = Vec::new();
    let topic = field("Topic")?;
    match field("Endpoint")? {
        None => opts.push(("topic".into(), topic.unwrap_or_else(|| name.to_owned()))),
        Some(url) => {
            let scheme = url
                .split("://")
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let connector = match scheme.as_str() {
                "amqp" | "amqps" => "amqp",
                "mqtt" | "tcp" => "mqtt",
                "nats" => "nats",
                "http" | "https" => "http",
                other => {
                    return Err(format!(
                        "jobConfig.connectors.{side}Endpoint '{url}': scheme '{other}' is not amqp, mqtt, nats or http"
                    ))
                }
            };
            opts.push(("connector".into(), connector.into()));
            opts.push(("url".into(), url.clone()));
            if connector == "amqp" {
                for (f, o) in [
                    ("Exchange", "exchange"),
                    ("Queue", "queue"),
                    ("RoutingKey", "routing_key"),
                ] {
                    if let Some(v) = field(f)? {
                        opts.push((o.into(), v));
                    }
                }
            } else if let Some(t) = topic.or(field("Subject")?) {
                opts.push(("topic".into(), t));
            }
        }
    }
    let with: Vec<String> = opts
        .iter()
        .map(|(k, v)| format!("{k} = {}", quote(v)))
        .collect();
    Ok(format!(
        "CREATE STREAM {name} WITH ({});\n",
        with.join(", ")
    ))
}

/// Speaks of a job's fields where a message speaks of the streams and options generated for
/// it.
pub fn speak(message: &str, streams: &[(String, &str)]) -> String {
    let mut m = message.to_owned();
    for (name, side) in streams {
        for (option, field) in [
            ("url", "Endpoint"),
            ("topic", "Topic"),
            ("exchange", "Exchange"),
            ("queue", "Queue"),
            ("routing_key", "RoutingKey"),
        ] {
            m = m.replace(
                &format!("stream {name}: option '{option}'"),
                &format!("jobConfig.connectors.{side}{field}"),
            );
        }
        let whole = format!("the job's {side} (jobConfig.connectors.{side}…)");
        for generated in [
            format!("source:{name}"),
            format!("sink:{name}"),
            format!("stream {name}"),
        ] {
            m = m.replace(&generated, &whole);
        }
        m = m.replace(name.as_str(), &format!("the job's {side}"));
    }
    m
}

/// An error in the paper's terms, without positions in the generated rule text (meaningless
/// to whoever sent the job).
pub fn in_paper_terms(e: NodeError, streams: &[(String, &str)]) -> NodeError {
    match e {
        NodeError::Invalid { problems, .. } if !problems.is_empty() => {
            let said: Vec<String> = problems
                .iter()
                .map(|p| match &p.hint {
                    Some(h) => format!("{} ({})", speak(&p.message, streams), speak(h, streams)),
                    None => speak(&p.message, streams),
                })
                .collect();
            NodeError::invalid(said.join("; "))
        }
        NodeError::Invalid { message, .. } => NodeError::invalid(speak(&message, streams)),
        NodeError::Start(e) => NodeError::Start(e.map_message(|m| speak(m, streams))),
        other => other,
    }
}
