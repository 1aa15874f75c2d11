//! Frame bodies: building the frames the client sends and reading the ones
//! it receives. Pure functions, no I/O.

use sodp_proto::{Frame, FrameType, Value};

use crate::error::Error;

/// `WATCH {state, params?}` on the stream id the client suggests.
pub fn watch(stream_id: u32, key: &str, params: Option<&Value>) -> Frame {
    let mut fields = vec![("state", Value::from(key))];
    fields.extend(params.map(|p| ("params", p.clone())));
    Frame::new(FrameType::Watch, stream_id, Value::map_from(fields))
}

/// `RESUME {state, since_version, params?}`.
pub fn resume(stream_id: u32, key: &str, since_version: u64, params: Option<&Value>) -> Frame {
    let mut fields = vec![
        ("state", Value::from(key)),
        ("since_version", Value::from(since_version)),
    ];
    fields.extend(params.map(|p| ("params", p.clone())));
    Frame::new(FrameType::Resume, stream_id, Value::map_from(fields))
}

/// `UNWATCH {state}`.
pub fn unwatch(stream_id: u32, key: &str) -> Frame {
    Frame::new(
        FrameType::Unwatch,
        stream_id,
        Value::map_from([("state", Value::from(key))]),
    )
}

/// `CALL {call_id, method, args}`, plus `idempotency_key` (extension
/// `idempotency`) when given.
pub fn call(call_id: &str, method: &str, args: Value, idempotency_key: Option<&str>) -> Frame {
    let mut fields = vec![
        ("call_id", Value::from(call_id)),
        ("method", Value::from(method)),
        ("args", args),
    ];
    if let Some(key) = idempotency_key {
        fields.push(("idempotency_key", Value::from(key)));
    }
    Frame::new(FrameType::Call, 0, Value::map_from(fields))
}

/// `AUTH {token}`.
pub fn auth(token: &str) -> Frame {
    Frame::new(
        FrameType::Auth,
        0,
        Value::map_from([("token", Value::from(token))]),
    )
}

/// `HEARTBEAT` (nil body).
pub fn heartbeat() -> Frame {
    Frame::new(FrameType::Heartbeat, 0, Value::Nil)
}

/// What the client needs from HELLO.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub auth: bool,
    /// In-band AUTH refresh on a live session (a project extension).
    pub token_refresh: bool,
    /// How often the server sends HEARTBEAT (`heartbeat_interval_ms`), when
    /// it says.
    pub heartbeat_interval: Option<std::time::Duration>,
    pub capabilities: Value,
}

impl Hello {
    pub fn parse(body: &Value) -> Result<Hello, Error> {
        let protocol = body.get("protocol").and_then(Value::as_str);
        if protocol.is_some_and(|p| p != "sodp") {
            return Err(Error::Protocol(format!(
                "server speaks {:?}, not sodp",
                protocol.unwrap_or_default()
            )));
        }
        let capabilities = body.get("capabilities").cloned().unwrap_or_default();
        Ok(Hello {
            auth: body.get("auth").and_then(Value::as_bool).unwrap_or(false),
            token_refresh: capabilities
                .get("token_refresh")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            heartbeat_interval: capabilities
                .get("heartbeat_interval_ms")
                .and_then(Value::as_u64)
                .filter(|ms| *ms > 0)
                .map(std::time::Duration::from_millis),
            capabilities,
        })
    }
}

/// A RESULT: its call id and either the data or the failure.
pub fn parse_result(body: &Value) -> Result<(String, Result<Value, Error>), Error> {
    let call_id = match body.get("call_id") {
        Some(Value::Str(s)) => s.clone(),
        // Published servers echo what they were given; accept integers too.
        Some(v @ (Value::Int(_) | Value::UInt(_))) => v.to_json().to_string(),
        _ => return Err(Error::Protocol("RESULT without a call_id".into())),
    };
    let data = body.get("data").cloned().unwrap_or_default();
    let success = body
        .get("success")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let outcome = if success {
        Ok(data)
    } else {
        let code = body.get("code").and_then(code_of).unwrap_or(500);
        let message = message_of(&data);
        let version = body.get("version").and_then(Value::as_u64);
        Err(match version {
            Some(version) if code == 409 => Error::Conflict {
                version,
                op: body
                    .get("op")
                    .and_then(Value::as_u64)
                    .and_then(|i| usize::try_from(i).ok()),
                message,
            },
            _ => Error::Call { code, message },
        })
    };
    Ok((call_id, outcome))
}

/// An ERROR frame's `(code, message)`.
pub fn parse_error(body: &Value) -> (i64, String) {
    let code = body.get("code").and_then(code_of).unwrap_or(500);
    let message = body.get("message").map(message_of).unwrap_or_default();
    (code, message)
}

fn code_of(v: &Value) -> Option<i64> {
    match *v {
        Value::Int(i) => Some(i),
        Value::Float(f) => Some(f as i64),
        _ => None,
    }
}

fn message_of(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Nil => String::new(),
        other => other.to_json().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(j: serde_json::Value) -> Value {
        Value::from(j)
    }

    #[test]
    fn outgoing_frames() {
        let f = resume(12, "a.b", 7, None);
        assert_eq!(f.kind, FrameType::Resume);
        assert_eq!(f.stream_id, 12);
        assert_eq!(f.body, body(json!({"state": "a.b", "since_version": 7})));
        let p = body(json!({"view": [1]}));
        let f = resume(12, "a.b", 7, Some(&p));
        assert_eq!(
            f.body,
            body(json!({"state": "a.b", "since_version": 7, "params": {"view": [1]}}))
        );
        let w = watch(3, "a.b", Some(&p));
        assert_eq!((w.kind, w.stream_id), (FrameType::Watch, 3));
        assert_eq!(
            w.body,
            body(json!({"state": "a.b", "params": {"view": [1]}}))
        );
        assert_eq!(watch(3, "a.b", None).body, body(json!({"state": "a.b"})));
        let c = call(
            "3",
            "state.set",
            body(json!({"state": "k", "value": 1})),
            None,
        );
        assert_eq!(
            c.body,
            body(
                json!({"call_id": "3", "method": "state.set", "args": {"state": "k", "value": 1}})
            )
        );
        let c = call(
            "4",
            "state.delete",
            body(json!({"state": "k"})),
            Some("idem-1"),
        );
        assert_eq!(c.body.get("idempotency_key"), Some(&Value::from("idem-1")));
        assert_eq!(heartbeat().encode(), vec![0x94, 0x09, 0x00, 0x00, 0xc0]);
    }

    #[test]
    fn hello() {
        let h = Hello::parse(&body(json!({
            "protocol": "sodp", "version": "1.0", "auth": true,
            "capabilities": {"token_refresh": true, "resume": true, "heartbeat_interval_ms": 30000}
        })))
        .unwrap();
        assert!(h.auth && h.token_refresh);
        assert_eq!(
            h.heartbeat_interval,
            Some(std::time::Duration::from_secs(30))
        );
        let bare = Hello::parse(&Value::Nil).unwrap();
        assert!(!bare.auth && !bare.token_refresh && bare.heartbeat_interval.is_none());
        assert!(Hello::parse(&body(json!({"protocol": "http"}))).is_err());
    }

    #[test]
    fn results() {
        let (id, r) = parse_result(&body(json!({
            "call_id": "1", "success": true, "data": {"version": 4}
        })))
        .unwrap();
        assert_eq!(id, "1");
        assert_eq!(r.unwrap(), body(json!({"version": 4})));

        let (_, r) = parse_result(&body(json!({
            "call_id": "2", "success": false, "data": "no such method", "code": 404
        })))
        .unwrap();
        assert_eq!(
            r.unwrap_err(),
            Error::Call {
                code: 404,
                message: "no such method".into()
            }
        );
        assert!(parse_result(&body(json!({"success": true}))).is_err());

        let (_, r) = parse_result(&body(json!({
            "call_id": "3", "success": false, "code": 409, "data": "version mismatch", "version": 7
        })))
        .unwrap();
        assert_eq!(
            r.unwrap_err(),
            Error::Conflict {
                version: 7,
                op: None,
                message: "version mismatch".into()
            }
        );
        let (_, r) = parse_result(&body(json!({
            "call_id": "4", "success": false, "code": 409, "data": "x", "version": 2, "op": 1
        })))
        .unwrap();
        assert!(matches!(
            r,
            Err(Error::Conflict {
                version: 2,
                op: Some(1),
                ..
            })
        ));
        // A 409 without a version (idempotency key reused) stays a call error.
        let (_, r) = parse_result(&body(json!({
            "call_id": "5", "success": false, "code": 409, "data": "reused"
        })))
        .unwrap();
        assert!(matches!(r, Err(Error::Call { code: 409, .. })));
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_error(&body(json!({"code": 403, "message": "denied"}))),
            (403, "denied".into())
        );
        assert_eq!(parse_error(&Value::Nil), (500, String::new()));
    }
}
