//! `weir simulate`: deterministic generated input for tests and benchmarks.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Generates events, the same for the same seed.
///
/// readings: JSON lines {"sensor_id": 0..999, "ts": epoch ms from 1700000000000 every 10 ms,
/// "value": uniform in [0, 100) with 3 decimals, "flag": boolean}.
///
/// debs: the DEBS 2012 Grand Challenge format (format = 'debs2012': 56 tab-separated fields,
/// CRLF, 100 ns time stamps), about 100 records per second from 2012-02-22T16:46:28.967Z, with
/// the real sample's value ranges. Unlike the sample, the sensors bm05, bm06, bm07 toggle every
/// 20 to 60 s and their valves bm08, bm09, bm10 follow after a delay (about 0.5, 0.7, 0.9 s)
/// that grows by about 5 % an hour, and mf01..mf03 surge by 40 % for a second about every
/// 5 minutes: Query 1 has state changes, delays, trends and alarms to find, Query 2 violations.
///   weir simulate debs --duration 1h --seed 7 --output debs-1h.tsv
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct SimulateArgs {
    /// What to generate.
    pub kind: Kind,
    /// How many events.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// For debs: how much event time to cover, as "90s", "10m", "1h" (instead of --count).
    #[arg(long)]
    pub duration: Option<String>,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// For debs: records per second of event time (the machine sends about 100; fewer make
    /// long spans small, e.g. a day of sensor/valve toggles for Query 1's 24-hour windows).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Where to write; standard output by default.
    #[arg(long, default_value = "-")]
    pub output: String,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    Readings,
    Debs,
}

pub fn run(a: SimulateArgs) -> Result<ExitCode, String> {
    let out: Box<dyn Write> = if a.output == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(&a.output).map_err(|e| format!("{}: {e}", a.output))?)
    };
    let mut w = BufWriter::with_capacity(1 << 16, out);
    let result = match (a.kind, &a.duration) {
        (Kind::Readings, None) => readings(&mut w, a.count, a.seed),
        (Kind::Readings, Some(_)) => {
            return Err("--duration is for debs; readings take --count".to_owned())
        }
        (Kind::Debs, d) => {
            let span_ns = match d {
                Some(text) => {
                    let ms = weir_core::parse_duration(text)
                        .map_err(|e| format!("--duration '{text}': {e}"))?;
                    Some(ms.max(0) as u64 * 1_000_000)
                }
                None => None,
            };
            if !(a.rate > 0.0 && a.rate <= 100_000.0) {
                return Err(format!(
                    "--rate {} is not a rate: give 0 < records per second <= 100000",
                    a.rate
                ));
            }
            Debs::new(a.seed, a.rate).write(&mut w, a.count, span_ns)
        }
    };
    result
        .and_then(|_| w.flush())
        .map_err(|e| format!("{}: {e}", a.output))?;
    Ok(ExitCode::SUCCESS)
}

fn readings(w: &mut impl Write, count: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in 0..count {
        let sensor: u32 = rng.random_range(0..1000);
        let milli: u32 = rng.random_range(0..100_000);
        let flag: bool = rng.random();
        let ts = 1_700_000_000_000u64 + 10 * i;
        writeln!(
            w,
            "{{\"sensor_id\":{sensor},\"ts\":{ts},\"value\":{}.{:03},\"flag\":{flag}}}",
            milli / 1000,
            milli % 1000
        )?;
    }
    Ok(())
}

/// DEBS 2012 records (the lines `weir simulate debs` writes) covering `span_ns` of event time.
pub fn debs_lines(seed: u64, rate: f64, span_ns: u64) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to memory cannot fail.
    let _ = Debs::new(seed, rate).write(&mut out, 0, Some(span_ns));
    out
}

/// The DEBS 2012 generator's state: time, the three power phases, and the sensor/valve pairs.
struct Debs {
    rng: ChaCha8Rng,
    /// Mean nanoseconds between records.
    interval: u64,
    /// Nanoseconds since the first record.
    t: u64,
    index: u64,
    mf: [f64; 3],
    pc: [i64; 3],
    sensors: [u8; 3],
    valves: [u8; 3],
    /// When each sensor toggles next, and when its valve follows the last toggle.
    next_toggle: [u64; 3],
    valve_due: [Option<u64>; 3],
    /// When the current power surge ends, and when the next one starts.
    surge_until: u64,
    next_surge: u64,
}

/// 2012-02-22T16:46:28.9670320Z, the first record of the real data, in nanoseconds.
const DEBS_START_NS: i64 = 1_329_929_188_967_032_000;
/// The real sample's constant pp01..pp36, pc01, pc02.
const DEBS_FLAGS: &str = "0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t1\t1\t0\t0\t0\t0\t0\t0\t1\t0\t0\t1\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0";
const SECOND: u64 = 1_000_000_000;

impl Debs {
    fn new(seed: u64, rate: f64) -> Debs {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let next_toggle = [0, 1, 2].map(|_| rng.random_range(5 * SECOND..30 * SECOND));
        let next_surge = rng.random_range(60 * SECOND..300 * SECOND);
        Debs {
            rng,
            interval: (1e9 / rate) as u64,
            t: 0,
            index: 2_556_001,
            mf: [13_056.0, 14_406.0, 8_119.0],
            pc: [71, 193, 150],
            sensors: [0; 3],
            valves: [0; 3],
            next_toggle,
            valve_due: [None; 3],
            surge_until: 0,
            next_surge,
        }
    }

    /// The valve delay of pair `k` at time `t`: 0.5, 0.7 or 0.9 s, growing 5 % an hour, with
    /// a little noise.
    fn delay(&mut self, k: usize, t: u64) -> u64 {
        let base = (5 + 2 * k as u64) as f64 * 1e8;
        let drift = 1.0 + 0.05 * t as f64 / 3600e9;
        let noise = self.rng.random_range(-2e6..2e6);
        (base * drift + noise) as u64
    }

    fn step(&mut self) {
        // 10 ms apart at the default rate, with jitter, as in the real data.
        let i = self.interval;
        self.t += self.rng.random_range(i * 6 / 10..i * 14 / 10);
        self.index += 1;
        let t = self.t;
        for k in 0..3 {
            if t >= self.next_toggle[k] {
                self.sensors[k] ^= 1;
                let due = t + self.delay(k, t);
                self.valve_due[k] = Some(due);
                self.next_toggle[k] = t + self.rng.random_range(20 * SECOND..60 * SECOND);
            }
            if self.valve_due[k].is_some_and(|due| t >= due) {
                self.valves[k] = self.sensors[k];
                self.valve_due[k] = None;
            }
        }
        if t >= self.next_surge {
            self.surge_until = t + SECOND;
            self.next_surge = t + self.rng.random_range(240 * SECOND..360 * SECOND);
        }
        for m in self.mf.iter_mut() {
            *m = (*m + self.rng.random_range(-8.0..8.0)).clamp(8_000.0, 16_000.0);
        }
        for p in self.pc.iter_mut() {
            *p = (*p + self.rng.random_range(-2..=2)).clamp(0, 9_999);
        }
    }

    fn line(&self, w: &mut impl Write) -> std::io::Result<()> {
        let ns = DEBS_START_NS + self.t as i64;
        let at = chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S");
        let ticks = ns.rem_euclid(1_000_000_000) / 100;
        let surge = if self.t < self.surge_until { 1.4 } else { 1.0 };
        let [m1, m2, m3] = self.mf.map(|m| (m * surge).round() as i64);
        let [p1, p2, p3] = self.pc;
        let [s1, s2, s3] = self.sensors;
        let [v1, v2, v3] = self.valves;
        write!(
            w,
            "{at}.{ticks:07}+00:00\t{}\t{m1}\t{m2}\t{m3}\t{p1:04}\t{p2:04}\t{p3:04}\t0000\t0000\t0000\t0000\t{s1}\t{s2}\t{s3}\t{v1}\t{v2}\t{v3}\t{DEBS_FLAGS}\r\n",
            self.index
        )
    }

    /// Writes `count` records, or as many as `span_ns` of event time holds.
    fn write(
        mut self,
        w: &mut impl Write,
        count: u64,
        span_ns: Option<u64>,
    ) -> std::io::Result<()> {
        let mut n = 0;
        loop {
            match span_ns {
                Some(span) if self.t > span => break,
                None if n >= count => break,
                _ => {}
            }
            self.line(w)?;
            self.step();
            n += 1;
        }
        Ok(())
    }
}
