//! Crash recovery, end to end: `weir serve` runs a stateful rule set (a window, a join, a
//! pattern and a change detector) twice, once with exactly-once and once with at-least-once
//! delivery, while events arrive by HTTP. The process is killed with SIGKILL at random moments,
//! 20 times, and restarted each time; the sender resumes from the end of the durable input log.
//! The exactly-once results must equal those of a run without failures, exactly; the
//! at-least-once results must contain every one of them.

mod common;
use common::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const OUTPUTS: [&str; 4] = ["win", "join", "pat", "chg"];
const EVENTS: usize = 12_000;
const BATCH: usize = 10;

fn rule_sql(prefix: &str) -> String {
    format!(
        "INSERT INTO {prefix}_win SELECT sensor, window_start, count(*) AS n, sum(v) AS total FROM readings GROUP BY sensor, TUMBLE(ts, INTERVAL '1' SECOND);
         INSERT INTO {prefix}_join SELECT readings.sensor, readings.ts AS rts, valves.ts AS vts FROM readings JOIN valves ON readings.sensor = valves.sensor AND valves.ts BETWEEN readings.ts AND readings.ts + INTERVAL '100' MILLISECOND;
         INSERT INTO {prefix}_pat SELECT * FROM readings MATCH_RECOGNIZE (PARTITION BY sensor ORDER BY ts MEASURES FIRST(A.v) AS a, LAST(B.v) AS b, LAST(C.ts) AS at PATTERN (A B+ C) WITHIN INTERVAL '5' SECOND DEFINE B AS B.v > PREV(B.v), C AS C.v < PREV(C.v));
         INSERT INTO {prefix}_chg SELECT sensor, ts, open FROM valves WHERE changed(open) OVER (PARTITION BY sensor);"
    )
}

fn readings() -> Vec<Value> {
    (0..EVENTS as i64)
        .map(
            |i| json!({"sensor": i % 4, "ts": 1_700_000_000_000i64 + i * 25, "v": (i * 7919) % 23}),
        )
        .collect()
}

fn valves() -> Vec<Value> {
    (0..EVENTS as i64)
        .map(
            |i| json!({"sensor": i % 4, "ts": 1_700_000_000_010i64 + i * 25, "open": (i / 12) % 2}),
        )
        .collect()
}

struct Node {
    child: Child,
    base: String,
}

/// A node that is dropped (also when a test fails) is killed.
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    async fn start(dir: &Path, port: u16, run: usize) -> Node {
        let log = std::fs::File::create(dir.join(format!("node-{run}.log"))).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
        command.args(["serve", "--mqtt", "off", "--workers", "2"]);
        let settings = dir.join("weir.toml");
        if settings.exists() {
            command.arg("--config").arg(settings);
        }
        let child = command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let node = Node {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("{}/v1/health", node.base))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "node did not come up (see {})",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node
    }

    /// SIGKILL.
    fn kill(self) {
        drop(self);
    }

    async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{path}: {v}");
        v
    }

    async fn install(&self) {
        for s in [
            "CREATE STREAM readings (sensor BIGINT, ts BIGINT, v BIGINT) WITH (timestamp = 'ts')",
            "CREATE STREAM valves (sensor BIGINT, ts BIGINT, open BIGINT) WITH (timestamp = 'ts')",
        ] {
            self.post("/v1/streams", json!({"sql": s})).await;
        }
        for (id, delivery) in [("eo", "exactly_once"), ("al", "at_least_once")] {
            let options = json!({"delivery": delivery, "checkpoint_interval": "200ms"});
            self.post(
                "/v1/rules",
                json!({"id": id, "sql": rule_sql(id), "options": options}),
            )
            .await;
        }
    }

    /// The newest checkpoint epoch of the exactly-once rule.
    async fn epoch(&self) -> u64 {
        self.get("/v1/rules/eo/status").await["checkpoint"]["epoch"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits until the exactly-once rule has completed a checkpoint after `epoch`.
    async fn checkpointed_after(&self, epoch: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.epoch().await <= epoch {
            assert!(Instant::now() < deadline, "no checkpoint completed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many events of a stream its durable log holds: where the sender resumes.
    async fn logged(&self, stream: &str) -> usize {
        self.get(&format!("/v1/streams/{stream}/log?limit=0")).await["end"]
            .as_u64()
            .unwrap() as usize
    }

    /// Every result on an output topic, as sorted JSON text.
    async fn results(&self, stream: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let page = self
                .get(&format!("/v1/streams/{stream}/log?from={from}&limit=5000"))
                .await;
            let events = page["events"].as_array().unwrap();
            out.extend(events.iter().map(|e| e["event"].to_string()));
            from = page["end"].as_u64().unwrap();
            if events.is_empty() || events.last().unwrap()["offset"].as_u64() == Some(from - 1) {
                break;
            }
            from = events.last().unwrap()["offset"].as_u64().unwrap() + 1;
        }
        out.sort();
        out
    }

    /// Waits until both rules have checkpointed several times after all input arrived and
    /// their outputs stopped growing.
    async fn settle(&self) {
        let start = self.epoch().await;
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.epoch().await;
            let mut sizes = Vec::new();
            for p in ["eo", "al"] {
                for o in OUTPUTS {
                    sizes.push(self.logged(&format!("{p}_{o}")).await);
                }
            }
            if now >= start + 4 && last.as_ref() == Some(&sizes) {
                return;
            }
            assert!(Instant::now() < deadline, "rules did not settle");
            last = Some(sizes);
        }
    }
}

/// Sends events from the given positions until done or the node goes away; returns whether it
/// finished.
async fn send(base: String, from: (usize, usize)) -> bool {
    let client = reqwest::Client::new();
    let (r, v) = (readings(), valves());
    let (mut i, mut j) = from;
    while i < EVENTS || j < EVENTS {
        // Paced, so that the kills land while events are arriving.
        tokio::time::sleep(Duration::from_millis(2)).await;
        for (stream, events, at) in [("readings", &r, &mut i), ("valves", &v, &mut j)] {
            if *at >= EVENTS {
                continue;
            }
            let end = (*at + BATCH).min(EVENTS);
            let sent = client
                .post(format!("{base}/v1/streams/{stream}/events"))
                .json(&Value::Array(events[*at..end].to_vec()))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => *at = end,
                _ => return false,
            }
        }
    }
    true
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-crash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn outputs(node: &Node, prefix: &str) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for o in OUTPUTS {
        all.push(node.results(&format!("{prefix}_{o}")).await);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_twenty_times_exactly_once_equals_a_run_without_failures() {
    // The run without failures.
    let dir = scratch("reference");
    let node = Node::start(&dir, free_port(), 0).await;
    node.install().await;
    assert!(send(node.base.clone(), (0, 0)).await);
    node.settle().await;
    let expected = outputs(&node, "eo").await;
    assert_eq!(
        expected,
        outputs(&node, "al").await,
        "same rules, same results"
    );
    assert!(
        expected.iter().all(|o| !o.is_empty()),
        "every rule produces output: {:?}",
        expected.iter().map(Vec::len).collect::<Vec<_>>()
    );
    node.kill();

    // The same, killed with SIGKILL 20 times at random moments.
    let seed: u64 = std::env::var("WEIR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64);
    eprintln!("crash test seed {seed} (set WEIR_CRASH_SEED to repeat)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dir = scratch("killed");
    let port = free_port();
    let mut mid_stream = 0;
    for run in 0..=20 {
        let node = Node::start(&dir, port, run).await;
        if run == 0 {
            node.install().await;
        }
        let from = (node.logged("readings").await, node.logged("valves").await);
        let sender = tokio::spawn(send(node.base.clone(), from));
        if run == 20 {
            assert!(sender.await.unwrap());
            node.settle().await;
            let status = node.get("/v1/rules/eo/status").await;
            assert!(status["checkpoint"]["restored_from"].is_u64(), "{status}");
            assert_eq!(status["checkpoint"]["delivery"], "exactly_once");
            let got = outputs(&node, "eo").await;
            for (o, (g, e)) in OUTPUTS.iter().zip(got.iter().zip(&expected)) {
                assert_eq!(g.len(), e.len(), "{o}: as many results as without failures");
                assert_eq!(g, e, "{o}: the same results as without failures");
            }
            let at_least = outputs(&node, "al").await;
            let repeats: usize = at_least
                .iter()
                .zip(&expected)
                .map(|(g, e)| g.len() - e.len().min(g.len()))
                .sum();
            eprintln!(
                "at-least-once repeated {repeats} results after {mid_stream} kills mid-stream"
            );
            for (o, (g, e)) in OUTPUTS.iter().zip(at_least.iter().zip(&expected)) {
                let missing: Vec<_> = e.iter().filter(|x| g.binary_search(x).is_err()).collect();
                assert!(
                    missing.is_empty(),
                    "al_{o} lost {} results: {:?}",
                    missing.len(),
                    &missing[..missing.len().min(3)]
                );
            }
            node.kill();
            break;
        }
        // Kills 30 to 250 ms after a start often come before the first checkpoint (200 ms);
        // every fourth run lets one complete first, so that restores are certain to happen.
        if run % 4 == 3 {
            node.checkpointed_after(node.epoch().await).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..250))).await;
        node.kill();
        if !sender.await.unwrap() {
            mid_stream += 1;
        }
    }
    assert!(
        mid_stream >= 10,
        "only {mid_stream} of 20 kills happened while events were arriving"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(scratch("reference"));
}

/// The newest checkpoint file of a rule damaged while the node is down: the next start passes
/// it over for the one before, says why in the rule's status, and the rule re-reads its input
/// from that older position, so nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_checkpoint_is_passed_over_for_the_one_before() {
    let dir = scratch("damaged");
    let port = free_port();
    let node = Node::start(&dir, port, 0).await;
    node.install().await;
    assert!(send(node.base.clone(), (0, 0)).await);
    node.settle().await;
    node.kill();

    let ckpts = dir.join("data").join("checkpoints").join("al");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let newest = files.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(newest, &bytes).unwrap();
    let older: u64 = files[files.len() - 2]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    let node = Node::start(&dir, port, 1).await;
    let status = node.get("/v1/rules/al/status").await;
    let c = &status["checkpoint"];
    assert_eq!(c["restored_from"], older, "{status}");
    let note = c["restore_notes"][0].as_str().unwrap();
    assert!(note.contains("checksum mismatch"), "{note}");
    node.settle().await;
    let exact = outputs(&node, "eo").await;
    let at_least = outputs(&node, "al").await;
    for (o, (g, e)) in OUTPUTS.iter().zip(at_least.iter().zip(&exact)) {
        assert!(
            e.iter().all(|x| g.binary_search(x).is_ok()),
            "al_{o} lost results after the fallback"
        );
    }
    node.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The node's data directory on a small file system of its own (tmpfs), resized with a
/// remount; unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: PathBuf, kib: u64) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let size = format!("size={kib}k");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs needs root (CI runs as root)");
        SmallDisk(path)
    }

    fn resize(&self, kib: u64) {
        let opts = format!("remount,size={kib}k");
        let ok = Command::new("mount")
            .args(["-o", &opts])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmpfs resized");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A disk that fills up: the data directory is a 24 MiB file system, of which the node keeps
/// 4 MiB free (min_free_bytes). A checkpoint that no longer fits fails with a clear error while
/// the rule goes on, and after a restart the rule resumes from its last good checkpoint. HTTP
/// ingest into a durable topic answers 507 with the reason once its log cannot grow, and
/// everything acknowledged before is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_checkpoints_and_ingest_with_clear_errors() {
    let dir = scratch("full");
    let port = free_port();
    let disk = SmallDisk::mount(dir.join("data"), 24 * 1024);
    std::fs::write(dir.join("weir.toml"), "min_free_bytes = 4194304\n").unwrap();
    let node = Node::start(&dir, port, 0).await;
    node.post(
        "/v1/streams",
        json!({"sql": "CREATE STREAM big (k BIGINT, v BIGINT)"}),
    )
    .await;
    let sql = "INSERT INTO big_out SELECT k, v FROM big WHERE changed(v) OVER (PARTITION BY k);";
    let options = json!({"checkpoint_interval": "200ms"});
    node.post(
        "/v1/rules",
        json!({"id": "keys", "sql": sql, "options": options}),
    )
    .await;
    node.post("/v1/streams/big/events", json!([{"k": 1, "v": 1}]))
        .await;
    let status = |s: Value| s["checkpoint"].clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(node.get("/v1/rules/keys/status").await)["epoch"].as_u64() < Some(2) {
        assert!(Instant::now() < deadline, "no checkpoint");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Enough keys that the state no longer fits in a file.
    for chunk in 0..400 {
        let events: Vec<Value> = (0..1000)
            .map(|i| json!({"k": chunk * 1000 + i, "v": i}))
            .collect();
        node.post("/v1/streams/big/events", Value::Array(events))
            .await;
    }
    let failing = loop {
        let c = status(node.get("/v1/rules/keys/status").await);
        if c["failed"].as_u64() >= Some(1) {
            break c;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(20),
            "checkpoints never failed: {c}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let why = failing["last_failure"].as_str().unwrap();
    assert!(why.contains("disk is full"), "{why}");
    let last_good = failing["epoch"].as_u64().unwrap();
    let rule = node.get("/v1/rules/keys/status").await;
    assert_eq!(rule["state"], "RUNNING", "the rule goes on: {rule}");

    // A durable topic whose log cannot grow any more.
    node.post(
        "/v1/streams",
        json!({"sql": "CREATE STREAM d (n BIGINT, pad STRING)"}),
    )
    .await;
    let options = json!({"delivery": "at_least_once"});
    node.post(
        "/v1/rules",
        json!({"id": "dur", "sql": "INSERT INTO d_out SELECT n FROM d;", "options": options}),
    )
    .await;
    let client = reqwest::Client::new();
    let pad = "x".repeat(200);
    let mut accepted = 0u64;
    let refusal = loop {
        let batch: Vec<Value> = (0..100)
            .map(|i| json!({"n": accepted + i, "pad": pad}))
            .collect();
        let r = client
            .post(format!("{}/v1/streams/d/events", node.base))
            .json(&Value::Array(batch))
            .send()
            .await
            .unwrap();
        if !r.status().is_success() {
            let code = r.status().as_u16();
            break (code, r.json::<Value>().await.unwrap());
        }
        accepted += 100;
        assert!(accepted < 200_000, "the log never filled up");
    };
    assert!(accepted > 0, "the log took events before it filled up");
    assert_eq!(refusal.0, 507, "{:?}", refusal.1);
    assert_eq!(refusal.1["error"]["code"], "disk_full");
    assert!(refusal.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("disk is full"));
    node.kill();

    // Room again: the rule starts from its last good checkpoint; nothing acknowledged is gone.
    disk.resize(256 * 1024);
    let node = Node::start(&dir, port, 1).await;
    let c = status(node.get("/v1/rules/keys/status").await);
    assert_eq!(c["restored_from"], last_good, "{c}");
    assert!(node.logged("d").await as u64 >= accepted);
    node.kill();
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}

/// JetStream in, JetStream out, exactly once: the rule's input log takes each stream sequence
/// once and its results carry ids JetStream deduplicates by. Killed 10 times while messages
/// arrive, the rule leaves in its output stream exactly what a run without failures leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_to_jetstream_exactly_once_through_kills() {
    let js = async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await.unwrap());
    let tag = format!("{}_{}", std::process::id(), free_port());
    let run = |name: &str, kills: usize, seed: u64| {
        let (js, name, tag) = (js.clone(), name.to_owned(), tag.clone());
        async move {
            let (input, output) = (format!("EOIN_{name}_{tag}"), format!("EOOUT_{name}_{tag}"));
            let (subject_in, subject_out) = (
                format!("eo.{name}.{tag}.in"),
                format!("eo.{name}.{tag}.out"),
            );
            let sql = format!(
                "CREATE STREAM src (sensor BIGINT, ts BIGINT, v BIGINT) WITH (connector = 'nats', subject = '{subject_in}', stream = '{input}', durable = 'weir', timestamp = 'ts');
                 CREATE STREAM dst WITH (connector = 'nats', subject = '{subject_out}', stream = '{output}');
                 INSERT INTO dst SELECT sensor, window_start, count(*) AS n, sum(v) AS total FROM src GROUP BY sensor, TUMBLE(ts, INTERVAL '1' SECOND);"
            );
            common::jetstream_stream(&js, &input, &subject_in).await;
            common::jetstream_stream(&js, &output, &subject_out).await;
            let dir = scratch(&format!("js-{name}"));
            let port = free_port();
            let node = Node::start(&dir, port, 0).await;
            let options = json!({"delivery": "exactly_once", "checkpoint_interval": "200ms"});
            node.post(
                "/v1/rules",
                json!({"id": "js", "sql": sql, "options": options}),
            )
            .await;
            let publisher = tokio::spawn({
                let js = js.clone();
                async move {
                    for i in 0..4000i64 {
                        let body = json!({"sensor": i % 3, "ts": 1_700_000_000_000i64 + i * 20, "v": i % 11});
                        js.publish(subject_in.clone(), body.to_string().into())
                            .await
                            .unwrap()
                            .await
                            .unwrap();
                        if i % 20 == 0 {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            });
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut node = node;
            for k in 1..=kills {
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
                node.kill();
                node = Node::start(&dir, port, k).await;
            }
            publisher.await.unwrap();
            // Settled: the rule has checkpointed several times since the input ended, and its
            // output stopped growing.
            let epoch = |s: Value| s["checkpoint"]["epoch"].as_u64().unwrap_or(0);
            let start = epoch(node.get("/v1/rules/js/status").await);
            let mut last = u64::MAX;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut s = js.get_stream(&output).await.unwrap();
                let n = s.info().await.unwrap().state.messages;
                let now = epoch(node.get("/v1/rules/js/status").await);
                if n == last && n > 0 && now >= start + 4 {
                    break;
                }
                assert!(Instant::now() < deadline, "the rule did not settle");
                last = n;
            }
            node.kill();
            let mut results: Vec<String> = common::jetstream_messages(&js, &output)
                .await
                .into_iter()
                .map(|m| m.1)
                .collect();
            let _ = js.delete_stream(&input).await;
            let _ = js.delete_stream(&output).await;
            let _ = std::fs::remove_dir_all(&dir);
            results.sort();
            results
        }
    };
    let expected = run("ref", 0, 0).await;
    assert!(expected.len() > 100, "{} results", expected.len());
    let got = run("killed", 10, std::process::id() as u64).await;
    assert_eq!(
        got.len(),
        expected.len(),
        "as many results as without failures"
    );
    assert_eq!(got, expected);
}
