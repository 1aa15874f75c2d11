//! The per-write costs of the state model: `diff` (whole-value set),
//! `apply` (every client, every DELTA) and `merge_patch` (state.patch), on
//! the small, wide and deep values, each changed in one place.

mod fixtures;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use sodp_proto::{apply, diff, merge::merge_patch, Value};

fn diffs(c: &mut Criterion) {
    let mut g = c.benchmark_group("diff");
    let (s0, s1) = (fixtures::small(), fixtures::small_edited());
    g.bench_function("small_one_field", |b| {
        b.iter(|| diff(black_box(&s0), black_box(&s1)))
    });

    let w0 = fixtures::wide();
    let w1 = fixtures::with_field(&w0, "k5000", Value::map_from([("v", Value::Int(-1))]));
    g.bench_function("wide_one_entry_shared", |b| {
        b.iter(|| diff(black_box(&w0), black_box(&w1)))
    });
    let w1_fresh = fixtures::unshared(&w1);
    g.bench_function("wide_one_entry_unshared", |b| {
        b.iter(|| diff(black_box(&w0), black_box(&w1_fresh)))
    });

    let (d0, d1) = (fixtures::deep(), fixtures::deep_with_leaf(1));
    g.bench_function("deep_leaf", |b| {
        b.iter(|| diff(black_box(&d0), black_box(&d1)))
    });
    g.finish();
}

fn applies(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    let (s, w, d) = (fixtures::small(), fixtures::wide(), fixtures::deep());
    let (so, wo, dop) = (
        fixtures::small_op(),
        fixtures::wide_op(),
        fixtures::deep_op(),
    );
    g.bench_function("small_one_field", |b| {
        b.iter(|| apply(black_box(&s), black_box(&so)).expect("applies"))
    });
    g.bench_function("wide_one_entry", |b| {
        b.iter(|| apply(black_box(&w), black_box(&wo)).expect("applies"))
    });
    g.bench_function("deep_leaf", |b| {
        b.iter(|| apply(black_box(&d), black_box(&dop)).expect("applies"))
    });
    g.finish();
}

fn merges(c: &mut Criterion) {
    let mut g = c.benchmark_group("merge_patch");
    let w = fixtures::wide();
    let one: Value = serde_json::json!({"k5000": {"s": "busy"}}).into();
    let one = one.as_map().expect("a map").clone();
    g.bench_function("wide_one_entry", |b| {
        b.iter(|| merge_patch(black_box(&w), black_box(&one)))
    });
    let hundred: Value = serde_json::Value::Object(
        (0..100)
            .map(|i| (format!("k{}", i * 97), serde_json::json!({"s": "busy"})))
            .collect(),
    )
    .into();
    let hundred = hundred.as_map().expect("a map").clone();
    g.bench_function("wide_100_entries", |b| {
        b.iter(|| merge_patch(black_box(&w), black_box(&hundred)))
    });
    let s = fixtures::small();
    let small_patch: Value = serde_json::json!({"count": 43, "pos": {"x": 11}}).into();
    let small_patch = small_patch.as_map().expect("a map").clone();
    g.bench_function("small_two_fields", |b| {
        b.iter(|| merge_patch(black_box(&s), black_box(&small_patch)))
    });
    g.finish();
}

criterion_group!(benches, diffs, applies, merges);
criterion_main!(benches);
