//! `weir replay`: publishes a data file to a stream at its original pace, faster, or as fast as
//! possible, stamping each event with the time it was sent.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use weir_connectors::live::{Health, Outgoing, Url};
use weir_connectors::Endpoint;
use weir_core::{Row, Value};

use super::client::NodeArg;

/// Publish a data file to a stream, one event per message, each stamped with the wall-clock
/// time it was sent in `sent_ns` (the seed paper's mX_orgts), at the original pace of its time
/// stamps, faster (--speed), or as fast as possible (--max).
///
/// --to is a stream of a node (HTTP ingest; --node or WEIR_NODE says which node), or a broker:
///   mqtt://host:port/topic            (QoS 1)
///   nats://host:port/subject
///   amqp://user:pass@host:port/vhost?exchange=x&routing_key=k
/// The file is JSON lines, or DEBS 2012 records (--format debs2012; the default for *.tsv).
///
///   weir simulate debs --duration 10m --output debs.tsv
///   weir replay debs.tsv --to debs --speed 10
///   weir replay debs.tsv --to mqtt://127.0.0.1:1883/debs --max
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ReplayArgs {
    /// The data file.
    file: String,
    /// Where to publish: a node's stream name, or a broker URL.
    #[arg(long)]
    to: String,
    /// Speed-up over the original pace (1 = as recorded, 10 = ten times faster).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// As fast as the target takes them.
    #[arg(long)]
    max: bool,
    /// json or debs2012 [default: debs2012 for *.tsv, else json].
    #[arg(long)]
    format: Option<String>,
    /// The field holding each event's time, epoch milliseconds.
    #[arg(long, default_value = "ts")]
    time_field: String,
    #[command(flatten)]
    node: NodeArg,
}

/// Where events go.
enum Target {
    Node {
        url: String,
        http: reqwest::Client,
    },
    Broker(
        tokio::sync::mpsc::Sender<Outgoing>,
        tokio::task::JoinHandle<()>,
    ),
}

/// The connector options of a broker URL given to --to.
fn broker_options(to: &str) -> Result<BTreeMap<String, String>, String> {
    let (base, query) = to.split_once('?').unwrap_or((to, ""));
    let url = Url::parse(base)?;
    let server = match url.port {
        Some(p) => format!("{}://{}:{p}", url.scheme, url.host),
        None => format!("{}://{}", url.scheme, url.host),
    };
    let mut o: BTreeMap<String, String> = BTreeMap::new();
    match url.scheme.as_str() {
        "mqtt" => {
            o.insert("topic".into(), url.path.clone());
            o.insert("qos".into(), "1".into());
        }
        "nats" => {
            o.insert("subject".into(), url.path.clone());
        }
        "amqp" => {
            let auth = base
                .split_once("://")
                .map(|(_, r)| r.split('/').next().unwrap_or(r))
                .unwrap_or_default();
            o.insert("url".into(), format!("amqp://{auth}/{}", url.path));
        }
        other => return Err(format!("--to {to}: '{other}' is not mqtt, nats or amqp")),
    }
    o.entry("url".into()).or_insert(server);
    o.insert("connector".into(), url.scheme.clone());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--to {to}: '{pair}' is not key=value"))?;
        o.insert(k.to_owned(), v.to_owned());
    }
    Ok(o)
}

/// The events of the file, in file order.
fn read(path: &str, format: Option<&str>) -> Result<Vec<Row>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let debs = match format {
        Some("debs2012") => true,
        Some("json") => false,
        Some(other) => return Err(format!("--format {other}: use json or debs2012")),
        None => path.ends_with(".tsv"),
    };
    let mut rows = Vec::new();
    for (i, line) in text.split(|c| *c == b'\n').enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        if debs {
            weir_connectors::debs::decode_line(line, &mut rows);
        } else {
            rows.push(weir_connectors::codec::decode_json(line));
        }
        if let Some(Err(e)) = rows.last() {
            return Err(format!("{path}:{}: {e}", i + 1));
        }
    }
    rows.into_iter().collect()
}

pub fn run(a: ReplayArgs) -> Result<ExitCode, String> {
    if a.speed.is_nan() || a.speed <= 0.0 {
        return Err(format!("--speed {} must be above 0", a.speed));
    }
    let rows = read(&a.file, a.format.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let target = if a.to.contains("://") {
            let endpoint = Endpoint::from_options("replay", &broker_options(&a.to)?)
                .map_err(|e| e.to_string())?;
            endpoint.check().await.map_err(|e| e.to_string())?;
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            let sink = endpoint
                .spawn_sink(rx, Arc::new(Health::default()))
                .ok_or("that target takes no messages")?;
            Target::Broker(tx, sink)
        } else {
            let base = a.node.node.trim_end_matches('/');
            Target::Node {
                url: format!("{base}/v1/streams/{}/events", a.to),
                http: a.node.http()?,
            }
        };
        let bar = ProgressBar::new(rows.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("replay {bar:40} {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let time = |r: &Row| match r.get(&a.time_field) {
            Some(Value::Int(t)) => Some(*t),
            _ => None,
        };
        let first = rows.iter().find_map(time).unwrap_or(0);
        let started = Instant::now();
        let mut batch: Vec<serde_json::Value> = Vec::new();
        let total = rows.len();
        for (i, mut row) in rows.into_iter().enumerate() {
            if !a.max {
                if let Some(t) = time(&row) {
                    let due = Duration::from_secs_f64((t - first).max(0) as f64 / 1000.0 / a.speed);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        flush(&target, &mut batch).await?;
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            row.set("sent_ns", Value::Int(now));
            match &target {
                Target::Broker(tx, _) => {
                    let payload = Bytes::from(serde_json::to_vec(&row).map_err(|e| e.to_string())?);
                    tx.send(Outgoing { payload, id: None })
                        .await
                        .map_err(|_| "the broker connection ended")?;
                }
                Target::Node { .. } => {
                    batch.push(serde_json::to_value(&row).map_err(|e| e.to_string())?);
                    if batch.len() >= 500 || i + 1 == total {
                        flush(&target, &mut batch).await?;
                    }
                }
            }
            bar.inc(1);
        }
        flush(&target, &mut batch).await?;
        bar.finish_and_clear();
        if let Target::Broker(tx, sink) = target {
            drop(tx);
            let _ = tokio::time::timeout(Duration::from_secs(30), sink).await;
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "weir: replayed {total} event(s) to {} in {secs:.3} s ({:.0} events/s)",
            a.to,
            total as f64 / secs.max(1e-9)
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Sends what a node target has batched up.
async fn flush(target: &Target, batch: &mut Vec<serde_json::Value>) -> Result<(), String> {
    let Target::Node { url, http } = target else {
        return Ok(());
    };
    if batch.is_empty() {
        return Ok(());
    }
    let body = serde_json::Value::Array(std::mem::take(batch)).to_string();
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !r.status().is_success() {
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        return Err(format!("{url}: {status}: {text}"));
    }
    Ok(())
}
