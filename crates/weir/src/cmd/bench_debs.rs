//! `weir bench debs`: the DEBS 2012 case end to end (replay → Query 1 and Query 2 rules →
//! results), measured as seed paper 000 (section V.B) measures its Kafka Streams service:
//!
//! - Av_SM: the mean interval between consecutive source messages as the replay sends them
//!   (their `sent_ns`, the paper's mX_orgts);
//! - Av_DV: the mean time from sending a source message to the rule reading it (`rcv_ns`,
//!   mX_rcvts), over every message (a probe rule reports each one);
//! - Av_TAT: the mean time from reading the record that shows a state change (m2_rcvts) to
//!   sending the state change to the next group of operators (`k_sent_ns`, K_sentts), over
//!   every result of Query 1's first stage.
//!
//! `--via engine` runs the rules in this process without a node (the throughput figure);
//! `embedded` and `mqtt://host:port` run a node in this process and feed it through its
//! embedded topics or through the broker.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rumqttc::{MqttOptions, QoS};
use tokio::sync::mpsc;
use weir_core::{Row, Value};
use weir_engine::{Dataflow, EngineConfig};
use weir_lang::Program;
use weir_node::registry::RuleOptions;
use weir_node::NodeConfig;

const DEBS: &str = include_str!("../../../../examples/debs2012/debs.sql");
const QUERY1: &str = include_str!("../../../../examples/debs2012/query1.sql");
const QUERY2: &str = include_str!("../../../../examples/debs2012/query2.sql");
/// Reports every source message's send and read times (for Av_DV).
const PROBE: &str = "INSERT INTO bench_delivery SELECT sent_ns, rcv_ns FROM debs;";

/// The paper's Table I.
const PAPER: [(&str, &str); 4] = [
    ("messages", "379,820"),
    ("Av_SM", "9.5 ms"),
    ("Av_TAT", "70.7 ms"),
    ("Av_DV", "2.7 ms"),
];

#[derive(Clone, Debug)]
pub enum Via {
    Engine,
    Embedded,
    Mqtt { host: String, port: u16 },
}

impl std::str::FromStr for Via {
    type Err = String;
    fn from_str(s: &str) -> Result<Via, String> {
        match s {
            "engine" => Ok(Via::Engine),
            "embedded" => Ok(Via::Embedded),
            _ => {
                let rest = s.strip_prefix("mqtt://").ok_or_else(|| {
                    format!("--via '{s}': give engine, embedded or mqtt://host:port")
                })?;
                let (host, port) = rest
                    .trim_end_matches('/')
                    .rsplit_once(':')
                    .unwrap_or((rest, "1883"));
                let port = port.parse().map_err(|_| format!("--via '{s}': bad port"))?;
                Ok(Via::Mqtt {
                    host: host.to_owned(),
                    port,
                })
            }
        }
    }
}

/// How fast the replay sends: at the recorded pace times a factor, or as fast as it can.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    Speed(f64),
    Max,
}

impl std::str::FromStr for Pace {
    type Err = String;
    fn from_str(s: &str) -> Result<Pace, String> {
        match s {
            "original" => Ok(Pace::Speed(1.0)),
            "max" => Ok(Pace::Max),
            f => match f.parse::<f64>() {
                Ok(x) if x > 0.0 => Ok(Pace::Speed(x)),
                _ => Err(format!(
                    "--pace '{s}': give original, max or a factor such as 10"
                )),
            },
        }
    }
}

pub struct DebsBench {
    pub duration_ms: i64,
    pub seed: u64,
    pub pace: Pace,
    pub via: Via,
    pub runs: usize,
    pub plot: Option<String>,
}

/// The generated records, decoded.
fn records(b: &DebsBench) -> Result<Vec<Row>, String> {
    let text = super::simulate::debs_lines(b.seed, 100.0, b.duration_ms as u64 * 1_000_000);
    let mut rows = Vec::new();
    for line in text.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
        weir_connectors::debs::decode_line(line, &mut rows);
    }
    rows.into_iter().collect()
}

fn program() -> Result<Program, String> {
    super::compile_sources(
        &[
            ("debs.sql", DEBS),
            ("query1.sql", QUERY1),
            ("query2.sql", QUERY2),
        ],
        weir_connectors::check::Target::Run,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Peak resident memory of this process, from /proc (Linux).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(b: DebsBench) -> Result<(), String> {
    eprintln!(
        "generating {} s of DEBS 2012 records (seed {}) ...",
        b.duration_ms / 1000,
        b.seed
    );
    let rows = records(&b)?;
    match b.via {
        Via::Engine => engine(&b, rows),
        _ => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(node(&b, rows))
        }
    }
}

/// Query 1 + Query 2 on the engine alone, fed from memory as fast as it takes them.
fn engine(b: &DebsBench, rows: Vec<Row>) -> Result<(), String> {
    let program = program()?;
    let outputs = weir_node::rule::boundary(&program).1;
    let bar = super::bench::bar(b.runs as u64, "runs");
    let mut rates = Vec::new();
    let mut secs = Vec::new();
    let mut counts = BTreeMap::new();
    for _ in 0..b.runs {
        let input = rows.clone();
        let started = Instant::now();
        let mut flow = Dataflow::build(
            &program,
            &["debs".to_owned()],
            &outputs,
            EngineConfig::default(),
        )
        .map_err(|e| e.to_string())?;
        let mut ingest = flow.take_ingest("debs").ok_or("no debs input")?;
        let drains: Vec<_> = outputs
            .iter()
            .map(|o| {
                let mut out = flow.take_output(o).expect("declared at build");
                let name = o.clone();
                std::thread::spawn(move || {
                    let mut n = 0usize;
                    while let Some(d) = out.next_delivered() {
                        if let weir_engine::Delivered::Events(e) = d {
                            n += e.len();
                        }
                    }
                    (name, n)
                })
            })
            .collect();
        for r in input {
            ingest.push(r)?;
        }
        ingest.finish();
        for d in drains {
            let (name, n) = d.join().map_err(|_| "an output thread panicked")?;
            counts.insert(name, n);
        }
        flow.join();
        let s = started.elapsed().as_secs_f64();
        secs.push(s);
        rates.push(rows.len() as f64 / s);
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "DEBS 2012 Query 1 + Query 2, engine in one process, {} records ({} s of generated data), median of {} run(s):",
        rows.len(),
        b.duration_ms / 1000,
        b.runs
    );
    println!("  time            {:.3} s", median(secs));
    println!("  events/s        {:.0}", median(rates));
    println!(
        "  peak RSS        {:.0} MB",
        peak_rss_mb().unwrap_or(f64::NAN)
    );
    let results: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  results         {}", results.join(", "));
    Ok(())
}

/// The measurements of one run through a node.
#[derive(Default)]
struct Measured {
    sent: Vec<i64>,
    /// (seconds since the first send, turnaround ns) per state change.
    tat: Vec<(f64, i64)>,
    /// (seconds since the first send, delivery ns) per source message.
    dv: Vec<(f64, i64)>,
    results: BTreeMap<String, usize>,
    wall: f64,
}

async fn node(b: &DebsBench, rows: Vec<Row>) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("weir-bench-debs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = NodeConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        mqtt_listen: None,
        data_dir: dir.clone(),
        ..NodeConfig::default()
    };
    let running = weir_node::start(config).await.map_err(|e| e.to_string())?;
    let node = running.node.clone();
    let topic = format!("weir-bench/{}/debs", std::process::id());
    let declaration = match &b.via {
        Via::Mqtt { host, port } => mqtt_declaration(host, *port, &topic)?,
        _ => DEBS.to_owned(),
    };
    node.create_stream(&declaration)
        .await
        .map_err(|e| e.to_string())?;
    let mut subs = Vec::new();
    let (tx, mut rx) = mpsc::channel::<std::sync::Arc<weir_node::hub::Published>>(1 << 10);
    for (id, sql) in [
        ("debs-q1", QUERY1),
        ("debs-q2", QUERY2),
        ("debs-probe", PROBE),
    ] {
        node.install_rule(id, sql, RuleOptions::default(), None)
            .await
            .map_err(|e| format!("{id}: {e}"))?;
    }
    for s in [
        "q1_changes",
        "q1_delays",
        "q1_alarms",
        "q1_trend",
        "q2_seconds",
        "q2_violations",
        "q2_recording",
        "q2_power",
        "bench_delivery",
    ] {
        let (_, tap) = node.stream_topics(s).await.map_err(|e| e.to_string())?;
        subs.push(node.hub.read(&tap, tx.clone()));
    }
    let ingest = node
        .stream_topics("debs")
        .await
        .map_err(|e| e.to_string())?
        .0;
    // Let MQTT sources subscribe before the first record.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let total = rows.len();
    let collector = tokio::spawn(async move {
        let mut m = Measured::default();
        let mut delivered = 0;
        let mut t0 = None;
        loop {
            // Once every record is in, results still on their way get a second to arrive.
            let wait = Duration::from_secs(if delivered < total { 10 } else { 1 });
            let Ok(Some(batch)) = tokio::time::timeout(wait, rx.recv()).await else {
                break;
            };
            let stream = batch
                .topic
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            for payload in &batch.payloads {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
                    continue;
                };
                *m.results.entry(stream.clone()).or_default() += 1;
                let field = |k: &str| v.get(k).and_then(serde_json::Value::as_i64);
                let since =
                    |ns: i64, t0: &mut Option<i64>| (ns - *t0.get_or_insert(ns)) as f64 / 1e9;
                match stream.as_str() {
                    "bench_delivery" => {
                        delivered += 1;
                        if let (Some(s), Some(r)) = (field("sent_ns"), field("rcv_ns")) {
                            m.dv.push((since(s, &mut t0), r - s));
                        }
                    }
                    "q1_changes" => {
                        if let (Some(r), Some(k)) = (field("rcv_ns"), field("k_sent_ns")) {
                            m.tat.push((since(r, &mut t0), k - r));
                        }
                    }
                    _ => {}
                }
            }
        }
        m
    });

    let bar = super::bench::bar(total as u64, "replayed");
    let started = Instant::now();
    let sent = match &b.via {
        Via::Mqtt { host, port } => {
            let mut o = MqttOptions::new(
                format!("weir-bench-debs-{}", std::process::id()),
                host,
                *port,
            );
            o.set_keep_alive(Duration::from_secs(30));
            let (client, mut events) = super::bench::prompt_client(o, 10_000);
            let poll = tokio::spawn(async move { while events.poll().await.is_ok() {} });
            let sent = replay(rows, b.pace, &bar, |p| {
                let client = client.clone();
                let topic = topic.clone();
                async move {
                    client
                        .publish(topic, QoS::AtLeastOnce, false, p)
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            poll.abort();
            sent
        }
        _ => {
            let hub = node.hub.clone();
            replay(rows, b.pace, &bar, |p| {
                let hub = hub.clone();
                let ingest = ingest.clone();
                async move {
                    hub.publish(&ingest, Bytes::from(p))
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await?
        }
    };
    bar.finish_and_clear();
    let mut m = collector.await.map_err(|e| e.to_string())?;
    m.wall = started.elapsed().as_secs_f64();
    m.sent = sent;
    drop(subs);
    running.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    report(b, &m)?;
    Ok(())
}

/// debs.sql's declaration with the stream read from an MQTT broker instead.
fn mqtt_declaration(host: &str, port: u16, topic: &str) -> Result<String, String> {
    let code: String = DEBS
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    if !code.contains("WITH (") {
        return Err("debs.sql has no WITH (...) to add the connector to".to_owned());
    }
    Ok(code.replacen(
        "WITH (",
        &format!("WITH (connector = 'mqtt', url = 'mqtt://{host}:{port}', topic = '{topic}', qos = '1', "),
        1,
    ))
}

/// Sends each record as JSON stamped with `sent_ns`, at the pace asked; returns the send times.
async fn replay<F, Fut>(
    rows: Vec<Row>,
    pace: Pace,
    bar: &indicatif::ProgressBar,
    send: F,
) -> Result<Vec<i64>, String>
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let first_ts = rows
        .first()
        .and_then(|r| r.get("ts"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let start = tokio::time::Instant::now();
    let mut sent = Vec::with_capacity(rows.len());
    for (i, mut row) in rows.into_iter().enumerate() {
        if let Pace::Speed(x) = pace {
            let ts = row.get("ts").and_then(Value::as_i64).unwrap_or(first_ts);
            let due = start + Duration::from_secs_f64((ts - first_ts).max(0) as f64 / 1000.0 / x);
            tokio::time::sleep_until(due).await;
        }
        let now = now_ns();
        row.set("sent_ns", Value::Int(now));
        send(serde_json::to_vec(&row).map_err(|e| e.to_string())?).await?;
        sent.push(now);
        if i % 256 == 0 {
            bar.set_position(i as u64);
        }
    }
    Ok(sent)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Mean, p50, p99 and max of nanosecond samples, in milliseconds.
fn summary(samples: impl Iterator<Item = i64>) -> Option<[f64; 4]> {
    // 1 ns to an hour, 3 significant digits.
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).ok()?;
    let (mut sum, mut n) = (0f64, 0u64);
    for s in samples {
        let v = s.max(0) as u64;
        h.saturating_record(v);
        sum += v as f64;
        n += 1;
    }
    (n > 0).then(|| {
        let ms = |v: u64| v as f64 / 1e6;
        [
            sum / n as f64 / 1e6,
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
        ]
    })
}

fn report(b: &DebsBench, m: &Measured) -> Result<(), String> {
    let sm = summary(m.sent.windows(2).map(|w| w[1] - w[0]));
    let tat = summary(m.tat.iter().map(|t| t.1));
    let dv = summary(m.dv.iter().map(|t| t.1));
    let fmt =
        |s: Option<[f64; 4]>, i: usize| s.map_or("-".to_owned(), |s| format!("{:.3} ms", s[i]));
    let via = match &b.via {
        Via::Mqtt { host, port } => format!("through MQTT at {host}:{port}"),
        _ => "through the node's embedded topics".to_owned(),
    };
    let pace = match b.pace {
        Pace::Max => "as fast as possible".to_owned(),
        Pace::Speed(1.0) => "at the original pace".to_owned(),
        Pace::Speed(x) => format!("at {x}x the original pace"),
    };
    println!("DEBS 2012 Query 1 + Query 2 on a node in this process, {via}, {pace}:");
    println!("  {:<22} {:>14} {:>14}", "", "weir", "paper (Table I)");
    let rows = [
        m.sent.len().to_string(),
        fmt(sm, 0),
        fmt(tat, 0),
        fmt(dv, 0),
    ];
    for ((name, paper), ours) in PAPER.iter().zip(rows) {
        println!("  {name:<22} {ours:>14} {paper:>14}");
    }
    for (name, s, n) in [
        ("turnaround", tat, m.tat.len()),
        ("delivery", dv, m.dv.len()),
    ] {
        println!(
            "  {:<22} {:>14} p50 {} / p99 {} / max {} ({n} samples)",
            name,
            "",
            fmt(s, 1),
            fmt(s, 2),
            fmt(s, 3)
        );
    }
    let span = match (m.sent.first(), m.sent.last()) {
        (Some(a), Some(z)) if z > a => (z - a) as f64 / 1e9,
        _ => m.wall,
    };
    println!(
        "  events/s               {:>14.0}",
        m.sent.len() as f64 / span.max(1e-9)
    );
    println!(
        "  peak RSS               {:>11.0} MB",
        peak_rss_mb().unwrap_or(f64::NAN)
    );
    let results: Vec<String> = m.results.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  results                {}", results.join(", "));
    if let Some(path) = &b.plot {
        std::fs::write(path, svg(m, &format!("DEBS 2012 on weir, {via}, {pace}")))
            .map_err(|e| format!("{path}: {e}"))?;
        println!("  plot                   {path}");
    }
    Ok(())
}

/// A latency plot: each state change's turnaround, and the delivery time's p99 per second.
fn svg(m: &Measured, title: &str) -> String {
    let (w, h, left, bottom, top) = (900.0, 420.0, 70.0, 50.0, 40.0);
    let mut per_second: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (t, d) in &m.dv {
        per_second.entry(*t as i64).or_default().push(*d);
    }
    let dv_p99: Vec<(f64, f64)> = per_second
        .into_iter()
        .map(|(s, mut v)| {
            v.sort_unstable();
            (
                s as f64,
                v[(v.len() * 99 / 100).min(v.len() - 1)] as f64 / 1e6,
            )
        })
        .collect();
    let tat: Vec<(f64, f64)> = m.tat.iter().map(|(t, d)| (*t, *d as f64 / 1e6)).collect();
    let x_max = tat.iter().chain(&dv_p99).map(|p| p.0).fold(1.0, f64::max);
    let y_max = tat.iter().chain(&dv_p99).map(|p| p.1).fold(0.1, f64::max) * 1.1;
    let x = |v: f64| left + v / x_max * (w - left - 20.0);
    let y = |v: f64| h - bottom - v / y_max * (h - bottom - top);
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n<text x='{left}' y='22' font-size='14'>{title}</text>\n"
    );
    s += &format!(
        "<line x1='{left}' y1='{0}' x2='{1}' y2='{0}' stroke='black'/><line x1='{left}' y1='{top}' x2='{left}' y2='{0}' stroke='black'/>\n",
        h - bottom,
        w - 20.0
    );
    for i in 0..=5 {
        let (xv, yv) = (x_max * i as f64 / 5.0, y_max * i as f64 / 5.0);
        s += &format!(
            "<text x='{:.1}' y='{:.1}' text-anchor='middle'>{xv:.1}</text><text x='{:.1}' y='{:.1}' text-anchor='end'>{yv:.3}</text>\n",
            x(xv),
            h - bottom + 16.0,
            left - 6.0,
            y(yv) + 4.0
        );
    }
    s += &format!(
        "<text x='{:.1}' y='{:.1}' text-anchor='middle'>seconds since the first record</text>\n<text x='16' y='{:.1}' transform='rotate(-90 16 {:.1})' text-anchor='middle'>milliseconds</text>\n",
        (left + w) / 2.0,
        h - 12.0,
        h / 2.0,
        h / 2.0
    );
    let line: Vec<String> = dv_p99
        .iter()
        .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
        .collect();
    s += &format!(
        "<polyline fill='none' stroke='#999' points='{}'/>\n",
        line.join(" ")
    );
    for (a, b) in &tat {
        s += &format!(
            "<circle cx='{:.1}' cy='{:.1}' r='2.5' fill='#c33'/>\n",
            x(*a),
            y(*b)
        );
    }
    s += &format!(
        "<circle cx='{0}' cy='{top}' r='3' fill='#c33'/><text x='{1}' y='{2}'>turnaround of each state change (Query 1, first stage)</text>\n<line x1='{3}' y1='{4}' x2='{5}' y2='{4}' stroke='#999'/><text x='{1}' y='{6}'>delivery time, p99 per second</text>\n</svg>\n",
        w - 360.0,
        w - 350.0,
        top + 4.0,
        w - 366.0,
        top + 18.0,
        w - 354.0,
        top + 22.0
    );
    s
}
