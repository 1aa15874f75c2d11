//! HELLO: the first frame of every session, and the capabilities it
//! advertises. An extension announces itself here.

use sodp_proto::{FrameType, Map, Value};

use super::Session;
use crate::wire;

impl Session {
    pub(super) fn send_hello(&mut self) {
        let config = &self.shared.config;
        let policy = &self.shared.policy;
        let mut capabilities = Map::default();
        for (name, value) in [
            ("multi_watch", Value::Bool(true)),
            ("params", Value::Bool(true)),
            ("resume", Value::Bool(true)),
            ("unwatch", Value::Bool(true)),
            ("presence", Value::Bool(true)),
            ("conditional", Value::Bool(true)),
            ("read", Value::Bool(true)),
            ("transaction", Value::Bool(true)),
            ("idempotency", Value::Bool(true)),
            ("prefix_watch", Value::Bool(true)),
            (
                "idempotency_window_ms",
                Value::from(self.shared.store.idempotency.window().as_millis() as u64),
            ),
            (
                "idempotency_max_keys",
                Value::from(self.shared.store.idempotency.max_keys() as u64),
            ),
            (
                "backpressure_limit",
                Value::from(config.outbound_queue as u64),
            ),
            ("history_limit", Value::from(config.history_len as u64)),
            (
                "max_message_bytes",
                Value::from(config.limits.max_message_bytes as u64),
            ),
            (
                "heartbeat_interval_ms",
                Value::from(config.heartbeat_interval.as_millis() as u64),
            ),
            ("token_refresh", Value::Bool(policy.jwt.is_some())),
            (
                "max_value_bytes",
                Value::from(config.limits.max_value_bytes.unwrap_or(0) as u64),
            ),
        ] {
            capabilities.insert(name.into(), value);
        }
        // Deadlines are logged with their changes: durable like the rest.
        capabilities.insert("ttl".into(), Value::Bool(true));
        if policy.rate_writes_per_sec > 0 {
            let n = u64::from(policy.rate_writes_per_sec);
            capabilities.insert("rate_limit_writes".into(), Value::from(n));
        }
        if policy.rate_watches_per_sec > 0 {
            let n = u64::from(policy.rate_watches_per_sec);
            capabilities.insert("rate_limit_watches".into(), Value::from(n));
        }
        let capabilities = Value::from(capabilities);
        let body = Value::map_from([
            ("protocol", Value::from("sodp")),
            ("version", Value::from("1.0")),
            (
                "server",
                Value::from(concat!("sodp-server/", env!("CARGO_PKG_VERSION"))),
            ),
            ("auth", Value::Bool(policy.jwt.is_some())),
            ("capabilities", capabilities),
        ]);
        let seq = self.next_seq();
        self.send(wire::encode(FrameType::Hello, 0, seq, body));
    }
}
