//! Frame encode/decode: the per-message cost every connection pays.
//! DELTA and CALL frames (small, the hot path), and STATE_INIT frames
//! carrying the small, wide and deep values.

mod fixtures;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sodp_proto::codec::DEFAULT_MAX_DEPTH;
use sodp_proto::{Frame, FrameType, Value};

fn delta_frame() -> Frame {
    let ops: Vec<Value> = fixtures::small_op().iter().map(|o| o.to_value()).collect();
    Frame::new(
        FrameType::Delta,
        12,
        Value::map_from([
            ("version", Value::Int(123_456)),
            ("ops", Value::from(ops)),
            ("state", Value::from("room.living")),
        ]),
    )
}

fn call_frame() -> Frame {
    Frame::new(
        FrameType::Call,
        0,
        Value::map_from([
            ("call_id", Value::from("c1042")),
            ("method", Value::from("state.patch")),
            (
                "args",
                Value::map_from([
                    ("state", Value::from("room.living")),
                    ("patch", Value::map_from([("count", Value::Int(43))])),
                ]),
            ),
        ]),
    )
}

fn state_init(value: Value) -> Frame {
    Frame::new(
        FrameType::StateInit,
        10,
        Value::map_from([
            ("state", Value::from("room.living")),
            ("version", Value::Int(99)),
            ("value", value),
            ("initialized", Value::Bool(true)),
        ]),
    )
}

fn bench_frame(c: &mut Criterion, name: &str, frame: Frame) {
    let bytes = frame.encode();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode", |b| b.iter(|| black_box(&frame).encode()));
    g.bench_function("decode", |b| {
        b.iter(|| Frame::decode(black_box(&bytes), DEFAULT_MAX_DEPTH).expect("valid"))
    });
    g.finish();
}

fn frames(c: &mut Criterion) {
    bench_frame(c, "frame/delta_small", delta_frame());
    bench_frame(c, "frame/call_patch", call_frame());
    bench_frame(c, "frame/state_init_small", state_init(fixtures::small()));
    bench_frame(c, "frame/state_init_wide", state_init(fixtures::wide()));
    bench_frame(c, "frame/state_init_deep", state_init(fixtures::deep()));
}

criterion_group!(benches, frames);
criterion_main!(benches);
