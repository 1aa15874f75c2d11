//! What `sodp` prints: one compact JSON text per line, fields in a fixed
//! order (`key`, `version`, `source`, `lagged` when updates were skipped,
//! `expires_at` when the key has a deadline, then `value` or `ops`).

use std::io::{self, Write};

use serde_json::Value as Json;
use sodp_client::{HistoryEntry, Source, Update, Value};

/// The line for one update. With `ops`, a DELTA prints its raw ops instead
/// of the whole value (baselines still print the value). An update that
/// stands for several the client skipped because the reader fell behind
/// (`lagged > 0`) says how many and prints the whole value, since the
/// skipped changes' ops are gone.
pub fn update_line(update: &Update, ops: bool) -> String {
    let mut head = format!(
        "{{\"key\":{},\"version\":{},\"source\":\"{}\"",
        Json::from(&*update.key),
        update.meta.version,
        update.meta.source
    );
    if update.lagged > 0 {
        head.push_str(&format!(",\"lagged\":{}", update.lagged));
    }
    if let Some(at) = update.meta.expires_at {
        head.push_str(&format!(",\"expires_at\":{at}"));
    }
    if ops && update.meta.source == Source::Delta && update.lagged == 0 {
        let ops: Vec<Json> = update
            .ops
            .iter()
            .map(|op| op.to_value().to_json())
            .collect();
        format!("{head},\"ops\":{}}}", Json::Array(ops))
    } else {
        format!("{head},\"value\":{}}}", update.value.to_json())
    }
}

/// `get --meta`: `{"version","initialized","value"}`.
pub fn meta_line(version: u64, initialized: bool, value: &Value) -> String {
    format!(
        "{{\"version\":{version},\"initialized\":{initialized},\"value\":{}}}",
        value.to_json()
    )
}

/// One change of `history`: `{"version","ops"}`.
pub fn history_line(entry: &HistoryEntry) -> String {
    let ops: Vec<Json> = entry.ops.iter().map(|op| op.to_value().to_json()).collect();
    format!(
        "{{\"version\":{},\"ops\":{}}}",
        entry.version,
        Json::Array(ops)
    )
}

/// Prints one line to stdout. Returns false when stdout is gone (e.g. the
/// reading end of a pipe closed), so the caller can stop quietly.
pub fn print_line(line: &str) -> bool {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use sodp_client::{DeltaOp, Meta, Value};

    fn update(source: Source, ops: Vec<DeltaOp>) -> Update {
        Update {
            key: Arc::from("game.player"),
            value: Value::from(serde_json::json!({"hp": 2})),
            meta: Meta {
                version: 7,
                initialized: true,
                source,
                expires_at: None,
            },
            ops: Arc::from(ops),
            lagged: 0,
        }
    }

    #[test]
    fn value_lines() {
        assert_eq!(
            update_line(&update(Source::Init, vec![]), true),
            r#"{"key":"game.player","version":7,"source":"init","value":{"hp":2}}"#
        );
    }

    #[test]
    fn ops_lines() {
        let u = update(Source::Delta, vec![DeltaOp::update("/hp", Value::Int(2))]);
        assert_eq!(
            update_line(&u, true),
            r#"{"key":"game.player","version":7,"source":"delta","ops":[{"op":"UPDATE","path":"/hp","value":2}]}"#
        );
        assert!(update_line(&u, false).ends_with(r#""value":{"hp":2}}"#));
    }

    #[test]
    fn a_deadline_is_printed() {
        let mut u = update(Source::Init, vec![]);
        u.meta.expires_at = Some(1_700_000_000_000);
        assert_eq!(
            update_line(&u, false),
            r#"{"key":"game.player","version":7,"source":"init","expires_at":1700000000000,"value":{"hp":2}}"#
        );
    }

    #[test]
    fn meta_and_history_lines() {
        assert_eq!(
            meta_line(3, true, &Value::Int(1)),
            r#"{"version":3,"initialized":true,"value":1}"#
        );
        let entry = HistoryEntry {
            version: 9,
            ops: vec![DeltaOp::remove("/")],
        };
        assert_eq!(
            history_line(&entry),
            r#"{"version":9,"ops":[{"op":"REMOVE","path":"/"}]}"#
        );
    }

    #[test]
    fn lagged_lines_print_the_whole_value() {
        let mut u = update(Source::Delta, vec![]);
        u.lagged = 3;
        let line =
            r#"{"key":"game.player","version":7,"source":"delta","lagged":3,"value":{"hp":2}}"#;
        assert_eq!(update_line(&u, true), line);
        assert_eq!(update_line(&u, false), line);
    }
}
