//! Wall-time benchmarks of greenlet switching, beside the bare corosensei floors, all in one
//! run so they see the same machine. One criterion iteration is one switch (or one greenlet
//! lifetime for `lifetime`), so criterion's time per iteration reads directly as ns/switch.
//!
//! `cargo bench --bench switch` runs them; `benches/report.py` (`make bench`) runs them with
//! the callgrind counts and the Python peer, and prints one table. See `benches/README.md`.

use criterion::{criterion_group, criterion_main, Criterion};

mod workloads;
use workloads::{
    lifetimes, maybe_traced, FloorMainChild, FloorTrampoline, FloorTrampolineCall, MainChild,
    Payload, PeerContextMainChild, PeerContextTwo, TwoGreenlets,
};

fn switches(c: &mut Criterion) {
    for (name, payload, traced) in [
        ("switch_two_greenlets", Payload::Unit, false),
        ("switch_two_greenlets_u64", Payload::U64, false),
        ("switch_two_greenlets_traced", Payload::Unit, true),
    ] {
        let w = TwoGreenlets::new(payload);
        c.bench_function(name, |b| {
            b.iter_custom(|n| maybe_traced(traced, || w.run(n)))
        });
    }
    for (name, payload, traced) in [
        ("switch_main_child", Payload::Unit, false),
        ("switch_main_child_u64", Payload::U64, false),
        ("switch_main_child_traced", Payload::Unit, true),
    ] {
        let w = MainChild::new(payload);
        c.bench_function(name, |b| {
            b.iter_custom(|n| maybe_traced(traced, || w.run(n)))
        });
    }
}

fn lifetime(c: &mut Criterion) {
    c.bench_function("lifetime", |b| b.iter_custom(lifetimes));
}

fn floors(c: &mut Criterion) {
    let mut trampoline = FloorTrampoline::new();
    c.bench_function("floor_trampoline", |b| b.iter_custom(|n| trampoline.run(n)));
    let mut call = FloorTrampolineCall::new();
    c.bench_function("floor_trampoline_call", |b| b.iter_custom(|n| call.run(n)));
    let mut main_child = FloorMainChild::new();
    c.bench_function("floor_main_child", |b| b.iter_custom(|n| main_child.run(n)));
    let mut two = PeerContextTwo::new();
    c.bench_function("peer_context_two", |b| b.iter_custom(|n| two.run(n)));
    let mut context_main_child = PeerContextMainChild::new();
    c.bench_function("peer_context_main_child", |b| {
        b.iter_custom(|n| context_main_child.run(n))
    });
}

criterion_group!(benches, floors, switches, lifetime);
criterion_main!(benches);
