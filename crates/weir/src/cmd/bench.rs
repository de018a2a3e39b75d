//! `weir bench mqtt`: end-to-end latency and throughput of a rule through an MQTT broker (or a
//! node's embedded endpoint), measured by a publisher that stamps each event and a subscriber
//! that reads the stamps.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Measure weir: the DEBS 2012 case, durable state, or a running rule through MQTT.
///
///   weir bench debs --via engine --pace max --duration 1h --runs 5   (throughput, one process)
///   weir bench debs --via embedded --pace original --duration 10m --plot debs.svg
///   weir bench debs --via mqtt://127.0.0.1:1883 --pace original --duration 10m
///   weir bench state --events 20000000 --keys 1000000
///   weir bench move --keys 10000,1000000 --runs 3
///   weir bench group --events 400000 --partitions 4 --runs 3   (needs tansu, or --brokers)
///   weir bench group --log jetstream --events 400000 --runs 3  (needs NATS ≥ 2.11, or --brokers)
///   weir bench secure --events 200000 --runs 3                 (auth and TLS on vs off)
///   weir bench rules --rules 10000 --events 1000 --runs 3      (what a rule costs a node)
/// The rule must read the input topic and write every event it keeps, with its `sent_us`
/// field, to the output topic. bench/mqtt.sh sets one up and runs the whole benchmark:
///   weir bench mqtt latency --port 1883 --rate 1000 --seconds 10
///   weir bench mqtt throughput --port 1883 --count 200000
///   weir bench mqtt throughput --port 1883 --count 200000 --output bench/in   (the broker alone)
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The DEBS 2012 case end to end: generated records replayed into Query 1 and Query 2
    /// (examples/debs2012), reporting seed paper 000's Av_SM, Av_TAT and Av_DV beside its
    /// Table I, p50/p99/max, events/s and peak RSS, and a latency plot (SVG).
    Debs {
        /// Event time of generated data to replay (about 100 records a second).
        #[arg(long, default_value = "10m")]
        duration: String,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// original, max, or a speed-up factor such as 10.
        #[arg(long, default_value = "original")]
        pace: super::bench_debs::Pace,
        /// engine (the rules alone in this process, for throughput), embedded (a node in this
        /// process fed through its embedded topics) or mqtt://host:port (fed through a broker).
        #[arg(long, default_value = "embedded")]
        via: super::bench_debs::Via,
        /// Runs to take the median of (engine only).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Where to write the latency plot (node runs).
        #[arg(long)]
        plot: Option<String>,
    },
    /// What durable state costs: throughput of the engine-core benchmark queries with a
    /// checkpoint every second against none, checkpoint time and size, and the time to
    /// recover a rule holding --keys keys (bench/state.sh runs it on a release build).
    State {
        /// Events per throughput run (generated as they are fed; enough for several seconds).
        #[arg(long, default_value_t = 20_000_000)]
        events: usize,
        /// Keys of state for the recovery run.
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// How long a rule processes nothing while it moves between two nodes (in this process)
    /// with a given amount of keyed state: stop at a checkpoint, pack, send, unpack, start.
    Move {
        /// Keys of state, one run each: 10000,1000000
        #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
        keys: Vec<usize>,
        /// Moves back and forth per state size (each counts twice).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A core group on Kafka or JetStream: read rate of one and of two member nodes (in this
    /// process) on a partitioned topic, the handover time when a member leaves, and on
    /// JetStream the time to resume after a member is killed. Starts its own broker unless
    /// --brokers names one (tansu; the NATS server .ci/services.sh installs); a Kafka run's
    /// changelog is NATS on 127.0.0.1:4222.
    Group {
        /// The log the group reads.
        #[arg(long, value_enum, default_value = "kafka")]
        log: super::bench_group::LogKind,
        /// Kafka bootstrap servers (host:port), or the NATS URL (2.11 or later).
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        #[arg(long, default_value_t = 400_000)]
        events: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// What authentication and TLS cost: HTTP ingest, embedded MQTT endpoint publishes and
    /// new connections on a node without tokens or TLS and on one with both (in this
    /// process, alternating runs; bench/secure.sh runs it on a release build).
    Secure {
        /// Events per ingest and publish run (one per request: a fiftieth of them).
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// What a rule costs a node: --rules rules reading one stream installed on a node in this
    /// process; install time, idle memory and threads with and without them, and the time
    /// --events events take to reach every rule.
    Rules {
        /// Filter rules (every event a result) or keyed tumbling-window rules.
        #[arg(long, value_enum, default_value = "filter")]
        query: super::bench_rules::Query,
        #[arg(long, default_value_t = 10_000)]
        rules: usize,
        #[arg(long, default_value_t = 1_000)]
        events: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// One run in this process, its figures printed as JSON (what each run's process does).
        #[arg(long, hide = true)]
        child: bool,
    },
    /// Latency and throughput of a rule through MQTT.
    Mqtt {
        #[command(subcommand)]
        mode: Mode,
        #[command(flatten)]
        broker: Broker,
    },
}

#[derive(Args, Clone)]
struct Broker {
    #[arg(long, default_value = "127.0.0.1", global = true)]
    host: String,
    #[arg(long, default_value_t = 1883, global = true)]
    port: u16,
    /// Topic the publisher writes.
    #[arg(long, default_value = "bench/in", global = true)]
    input: String,
    /// Topic the subscriber reads (the rule's output).
    #[arg(long, default_value = "bench/out", global = true)]
    output: String,
}

#[derive(Subcommand)]
enum Mode {
    /// Publish at a fixed rate; report latency percentiles of what comes back.
    Latency {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Publish as fast as the broker takes them; report the rate the subscriber receives.
    Throughput {
        #[arg(long, default_value_t = 200_000)]
        count: u64,
    },
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// An MQTT 3.1.1 client whose small publishes go out at once: with Nagle's algorithm a publish
/// waits while the one before it is unacknowledged, up to the peer's delayed ACK (40 ms). The
/// benchmarks' clients use it, so that what they time is weir and not their own sockets
/// (weir's MQTT connectors turn Nagle's algorithm off too).
pub fn prompt_client(
    o: rumqttc::MqttOptions,
    capacity: usize,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (client, mut events) = rumqttc::AsyncClient::new(o, capacity);
    events.network_options.set_tcp_nodelay(true);
    (client, events)
}

fn client(b: &Broker, role: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(
        format!("weir-bench-{role}-{}", std::process::id()),
        &b.host,
        b.port,
    );
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    prompt_client(o, 10_000)
}

/// What the subscriber saw: latencies (µs) and the times of the first and last message.
struct Seen {
    hist: Histogram<u64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

async fn subscribe(b: &Broker) -> Result<(AsyncClient, rumqttc::EventLoop), String> {
    let (c, mut events) = client(b, "sub");
    c.subscribe(&b.output, QoS::AtMostOnce)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match events
            .poll()
            .await
            .map_err(|e| format!("subscriber: {e}"))?
        {
            Event::Incoming(Packet::SubAck(_)) => return Ok((c, events)),
            _ => continue,
        }
    }
}

async fn receive(
    mut events: rumqttc::EventLoop,
    expect: u64,
    idle: Duration,
    bar: ProgressBar,
) -> Seen {
    let mut seen = Seen {
        hist: Histogram::new(3).expect("histogram"),
        first: None,
        last: None,
    };
    let mut n = 0;
    while n < expect {
        match tokio::time::timeout(idle, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let t = Instant::now();
                seen.first.get_or_insert(t);
                seen.last = Some(t);
                n += 1;
                bar.inc(1);
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                    if let Some(sent) = v["sent_us"].as_u64() {
                        let _ = seen.hist.record(now_us().saturating_sub(sent));
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => break,
        }
    }
    bar.finish_and_clear();
    seen
}

pub(super) fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(&format!("{what} {{bar:40}} {{pos}}/{{len}} {{per_sec}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

pub fn run(args: BenchArgs) -> Result<ExitCode, String> {
    let (mode, broker) = match args.what {
        BenchCommand::Debs {
            duration,
            seed,
            pace,
            via,
            runs,
            plot,
        } => {
            let duration_ms = weir_core::parse_duration(&duration)
                .map_err(|e| format!("--duration '{duration}': {e}"))?;
            super::bench_debs::run(super::bench_debs::DebsBench {
                duration_ms,
                seed,
                pace,
                via,
                runs: runs.max(1),
                plot,
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::State { events, keys, runs } => {
            super::bench_state::overhead(events, runs)?;
            super::bench_state::recovery(keys, runs)?;
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::Move { keys, runs } => {
            super::bench_move::run(&keys, runs)?;
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::Group {
            log,
            brokers,
            partitions,
            events,
            runs,
        } => {
            super::bench_group::run(log, brokers, partitions, events, runs)?;
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::Secure { events, runs } => {
            super::bench_secure::run(events, runs.max(1))?;
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::Rules {
            query,
            rules,
            events,
            runs,
            child,
        } => {
            super::bench_rules::run(query, rules, events, runs.max(1), child)?;
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::Mqtt { mode, broker } => (mode, broker),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let (_sub, events) = subscribe(&broker).await?;
        let (publisher, mut pub_events) = client(&broker, "pub");
        tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });
        let (count, interval) = match mode {
            Mode::Latency { rate, seconds } => (rate * seconds, Some(Duration::from_secs_f64(1.0 / rate.max(1) as f64))),
            Mode::Throughput { count } => (count, None),
        };
        let receiver = tokio::spawn(receive(events, count, Duration::from_secs(5), bar(count, "received")));
        let started = Instant::now();
        let mut tick = interval.map(tokio::time::interval);
        if let Some(t) = &mut tick {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        }
        for i in 0..count {
            if let Some(t) = &mut tick {
                t.tick().await;
            }
            let payload = format!(r#"{{"sensor":"s{}","temp":{},"seq":{i},"sent_us":{}}}"#, i % 100, 20 + i % 30, now_us());
            publisher
                .publish(&broker.input, QoS::AtMostOnce, false, payload)
                .await
                .map_err(|e| e.to_string())?;
        }
        let publish_s = started.elapsed().as_secs_f64();
        let seen = receiver.await.map_err(|e| e.to_string())?;
        let received = seen.hist.len();
        let span = match (seen.first, seen.last) {
            (Some(f), Some(l)) => (l - f).as_secs_f64().max(1e-9),
            _ => 0.0,
        };
        let ms = |q: f64| seen.hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{}",
            serde_json::json!({
                "sent": count,
                "received": received,
                "publish_rate": (count as f64 / publish_s).round(),
                "receive_rate": if span > 0.0 { (received as f64 / span).round() } else { 0.0 },
                "latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "max": seen.hist.max() as f64 / 1000.0},
            })
        );
        Ok(ExitCode::SUCCESS)
    })
}
