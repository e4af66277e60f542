//! Stack allocator costs: a stack from the thread's pool and back, against corosensei's
//! `DefaultStack` (mmap + munmap), alone and as a whole coroutine lifetime.
//!
//! `cargo bench --bench stack`

use std::hint::black_box;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use criterion::{criterion_group, criterion_main, Criterion};
use greenlet::stack::{self, DEFAULT_STACK_SIZE};

fn alloc_release(c: &mut Criterion) {
    let mut g = c.benchmark_group("stack");
    // Warm the pool and install the overflow handler outside the measurement.
    drop(stack::allocate(DEFAULT_STACK_SIZE).unwrap());
    drop(stack::allocate(64 << 10).unwrap());
    g.bench_function("pool allocate+release 1 MiB", |b| {
        b.iter(|| stack::release(stack::allocate(black_box(DEFAULT_STACK_SIZE)).unwrap()))
    });
    g.bench_function("pool allocate+release 64 KiB", |b| {
        b.iter(|| stack::release(stack::allocate(black_box(64 << 10)).unwrap()))
    });
    g.bench_function("pool allocate+set_owner+release 1 MiB", |b| {
        b.iter(|| {
            let s = stack::allocate(black_box(DEFAULT_STACK_SIZE)).unwrap();
            s.set_owner(black_box(42), black_box(Some("worker-7")));
            stack::release(s)
        })
    });
    g.bench_function("DefaultStack new+drop 1 MiB", |b| {
        b.iter(|| drop(DefaultStack::new(black_box(DEFAULT_STACK_SIZE)).unwrap()))
    });
    g.finish();
}

fn lifetime(c: &mut Criterion) {
    let mut g = c.benchmark_group("coroutine lifetime");
    g.bench_function("GreenStack (pool)", |b| {
        b.iter(|| {
            let s = stack::allocate(DEFAULT_STACK_SIZE).unwrap();
            let mut co = Coroutine::with_stack(s, |_: &Yielder<u64, ()>, x: u64| x + 1);
            let CoroutineResult::Return(r) = co.resume(black_box(1)) else {
                unreachable!()
            };
            stack::release(co.into_stack());
            r
        })
    });
    g.bench_function("DefaultStack (mmap+munmap)", |b| {
        b.iter(|| {
            let s = DefaultStack::new(DEFAULT_STACK_SIZE).unwrap();
            let mut co = Coroutine::with_stack(s, |_: &Yielder<u64, ()>, x: u64| x + 1);
            let CoroutineResult::Return(r) = co.resume(black_box(1)) else {
                unreachable!()
            };
            drop(co.into_stack());
            r
        })
    });
    g.finish();
}

criterion_group!(benches, alloc_release, lifetime);
criterion_main!(benches);
