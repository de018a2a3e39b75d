//! Two nodes of one control plane, and a consumer of a RabbitMQ exchange's results.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use weir_node::NodeConfig;

use super::{config, data_dir, TestNode};

/// A node serving the control plane and one that joined it, each with its name and runtime,
/// heartbeats every 200 ms; `start` returns once both are listed up.
pub struct Pair {
    pub plane: TestNode,
    pub joined: TestNode,
    dirs: [std::path::PathBuf; 2],
}

impl Pair {
    pub async fn start(test: &str, plane: (&str, &str), joined: (&str, &str)) -> Pair {
        let dirs = [
            data_dir(&format!("{test}-{}", plane.0)),
            data_dir(&format!("{test}-{}", joined.0)),
        ];
        let node = |(name, runtime): (&str, &str), dir| NodeConfig {
            name: Some(name.to_owned()),
            runtime: runtime.to_owned(),
            heartbeat_ms: 200,
            ..config(dir)
        };
        let plane_node = TestNode::with(node(plane, &dirs[0])).await;
        let joined_node = TestNode::with(NodeConfig {
            join: Some(plane_node.base.clone()),
            ..node(joined, &dirs[1])
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, nodes) = plane_node.get("/v1/nodes").await;
            let up = |n: &str| {
                nodes
                    .as_array()
                    .is_some_and(|l| l.iter().any(|m| m["name"] == n && m["state"] == "up"))
            };
            if up(plane.0) && up(joined.0) {
                break;
            }
            assert!(Instant::now() < deadline, "{} joins: {nodes}", joined.0);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Pair {
            plane: plane_node,
            joined: joined_node,
            dirs,
        }
    }

    pub async fn stop(self) {
        self.plane.stop().await;
        self.joined.stop().await;
        for d in self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A consumer of what is published to durable direct `exchange` with `routing_key` (both
/// declared here, before the rule publishes), through a queue of its own.
pub async fn amqp_results(
    ch: &lapin::Channel,
    exchange: &str,
    routing_key: &str,
) -> lapin::Consumer {
    ch.exchange_declare(
        exchange.into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        exchange.into(),
        routing_key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_consume(
        q.name().clone(),
        "test".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
}
