//! Files in a running node: replay a file into a rule (one payload per line) and capture a
//! stream into a file (one JSON line per event, appended).

use std::io::{BufRead, Write};
use std::sync::Arc;

use super::FileConfig;
use crate::live::{Health, PayloadRx, PayloadTx, Stop};

/// Reads the file into `tx`, for a rule whose stream names one.
pub async fn run_source(c: FileConfig, tx: PayloadTx, health: Arc<Health>, stop: Stop) {
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let file = std::fs::File::open(&c.path)?;
        health.up();
        for line in std::io::BufReader::new(file).split(b'\n') {
            let mut line = line?;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                continue;
            }
            if stop.is_set() {
                break;
            }
            health.count();
            if tx.blocking_send(line.into()).is_err() {
                break;
            }
        }
        Ok(())
    });
    if let Ok(Err(e)) = read.await {
        tracing::warn!(error = %e, "file source failed");
    }
}

/// Appends what arrives on `rx` to the file.
pub async fn run_sink(c: FileConfig, mut rx: PayloadRx, health: Arc<Health>) {
    let write = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&c.path)?;
        health.up();
        let mut out = std::io::BufWriter::new(file);
        while let Some(result) = rx.blocking_recv() {
            out.write_all(&result.payload)?;
            out.write_all(b"\n")?;
            health.count();
            if rx.is_empty() {
                out.flush()?;
            }
        }
        out.flush()
    });
    if let Ok(Err(e)) = write.await {
        tracing::warn!(error = %e, "file sink failed");
    }
}
