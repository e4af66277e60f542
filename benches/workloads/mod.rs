//! The measured workloads, shared by the criterion bench (`benches/switch.rs`, wall time) and
//! the callgrind driver (`examples/switch_loop.rs`, instruction counts), so both measure the
//! same code.
//!
//! Every workload is set up once and then asked to perform `n` operations (switches, or
//! greenlet lifetimes); it returns the wall time of exactly those `n` operations, timed where
//! they run (inside the pinging greenlet for the two-greenlet case), so setup never counts.

#![allow(dead_code)] // each includer uses a subset

use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use corosensei::{Coroutine, Yielder};
use greenlet::{getcurrent, settrace, Error, Greenlet, Tracer, Value};

/// What each switch carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// `()`: the receiver drops it.
    Unit,
    /// A `u64`: the receiver downcasts it and sends back the successor.
    U64,
}

/// A no-op tracer, as Python's `greenlet.settrace(lambda event, args: None)`.
pub fn noop_tracer() -> Tracer {
    Tracer::new(|event| {
        black_box(event);
        Ok(())
    })
}

/// Runs `f` with a no-op tracer installed when `traced`, restoring the previous tracer after.
pub fn maybe_traced<R>(traced: bool, f: impl FnOnce() -> R) -> R {
    if !traced {
        return f();
    }
    let previous = settrace(Some(noop_tracer()));
    let result = f();
    settrace(previous);
    result
}

/// How one kind of payload is sent, echoed and consumed. Each workload is monomorphised per
/// kind, so the measured loop holds the code a program passing that kind would: no test of
/// which payload is in use.
trait Kind: 'static {
    /// What the sender sends for round `i`.
    fn send(i: u64) -> Value;
    /// What a receiver sends back for what it got.
    fn echo(got: Value) -> Value;
    /// What the sender does with the answer to round `i`.
    fn consume(got: Value, i: u64);
}

/// A unit payload, dropped by its receiver as a program that ignores it does
/// (`g.switch(())?;`). The receiver still reads the mailbox (its reads are volatile) and
/// tests the value in its drop. (It used to `black_box(&got)`, which makes the compiler store
/// the three words on the stack to take their address: 5 instructions per switch that no
/// program pays, and that made the unit case dearer than the `u64` one.)
struct UnitKind;

impl Kind for UnitKind {
    #[inline(always)]
    fn send(_: u64) -> Value {
        Value::unit()
    }

    #[inline(always)]
    fn echo(got: Value) -> Value {
        drop(got);
        Value::unit()
    }

    #[inline(always)]
    fn consume(got: Value, _: u64) {
        drop(got);
    }
}

struct U64Kind;

impl Kind for U64Kind {
    #[inline(always)]
    fn send(i: u64) -> Value {
        Value::new(i)
    }

    #[inline(always)]
    fn echo(got: Value) -> Value {
        let x = got.downcast::<u64>().expect("a u64 payload");
        Value::new(black_box(x).wrapping_add(1))
    }

    #[inline(always)]
    fn consume(got: Value, i: u64) {
        let x = got.downcast::<u64>().expect("a u64 payload");
        debug_assert_eq!(x, i.wrapping_add(1));
        black_box(x);
    }
}

/// Two non-main greenlets switching to each other ("ping" and "pong"); `main` only starts a
/// run and receives its time. One switch is one transfer between ping and pong.
pub struct TwoGreenlets {
    ping: Greenlet,
    pong: Greenlet,
}

impl TwoGreenlets {
    /// Creates and starts both greenlets; both are left suspended.
    pub fn new(payload: Payload) -> TwoGreenlets {
        match payload {
            Payload::Unit => TwoGreenlets::of::<UnitKind>(),
            Payload::U64 => TwoGreenlets::of::<U64Kind>(),
        }
    }

    fn of<K: Kind>() -> TwoGreenlets {
        let main = getcurrent();
        let main_in_pong = main.clone();
        // pong: answers every switch from ping. It learns ping's handle from its first value.
        let pong = Greenlet::new(move |first: Value| -> Result<(), Error> {
            let ping = first.downcast::<Greenlet>().expect("ping's handle");
            let mut got = main_in_pong.switch(())?;
            loop {
                got = ping.switch(K::echo(got))?;
            }
        });
        let pong_in_ping = pong.clone();
        // ping: for each run, times `switches` transfers and hands the time to main.
        let ping = Greenlet::new(move |first: Value| -> Result<(), Error> {
            let mut switches = first.downcast::<u64>().expect("a switch count");
            loop {
                let rounds = switches.div_ceil(2);
                let start = Instant::now();
                for i in 0..rounds {
                    let got = pong_in_ping.switch(K::send(i))?;
                    K::consume(got, i);
                }
                let elapsed = start.elapsed();
                // Time per switch times the switches asked for (rounds are whole pairs).
                let scaled = elapsed.mul_f64(switches as f64 / (2 * rounds).max(1) as f64);
                switches = main
                    .switch(scaled)?
                    .downcast::<u64>()
                    .expect("a switch count");
            }
        });
        // Start pong (it parks itself back in main), then ping with an empty run.
        pong.switch(ping.clone()).expect("pong starts");
        ping.switch(0_u64).expect("ping starts");
        TwoGreenlets { ping, pong }
    }

    /// Performs `switches` switches between ping and pong; returns their wall time.
    pub fn run(&self, switches: u64) -> Duration {
        self.ping
            .switch(switches)
            .expect("ping runs")
            .downcast::<Duration>()
            .expect("ping returns its time")
    }
}

impl Drop for TwoGreenlets {
    fn drop(&mut self) {
        // Pong first: unwinding it drops its handle to ping; killing ping then frees pong's.
        let _ = self.pong.kill();
        let _ = self.ping.kill();
    }
}

/// The main greenlet and one child switching back and forth. One switch is one transfer.
pub struct MainChild {
    payload: Payload,
    child: Greenlet,
}

impl MainChild {
    /// Creates and starts the child; it is left suspended.
    pub fn new(payload: Payload) -> MainChild {
        let child = match payload {
            Payload::Unit => MainChild::child::<UnitKind>(),
            Payload::U64 => MainChild::child::<U64Kind>(),
        };
        child.switch(()).expect("the child starts");
        MainChild { payload, child }
    }

    fn child<K: Kind>() -> Greenlet {
        let main = getcurrent();
        Greenlet::new(move |_first: Value| -> Result<(), Error> {
            let mut got = main.switch(())?;
            loop {
                got = main.switch(K::echo(got))?;
            }
        })
    }

    /// Performs `switches` switches (half of them main to child); returns their wall time.
    pub fn run(&self, switches: u64) -> Duration {
        match self.payload {
            Payload::Unit => self.run_as::<UnitKind>(switches),
            Payload::U64 => self.run_as::<U64Kind>(switches),
        }
    }

    fn run_as<K: Kind>(&self, switches: u64) -> Duration {
        let rounds = switches.div_ceil(2);
        let start = Instant::now();
        for i in 0..rounds {
            let got = self.child.switch(K::send(i)).expect("child");
            K::consume(got, i);
        }
        start
            .elapsed()
            .mul_f64(switches as f64 / (2 * rounds).max(1) as f64)
    }
}

impl Drop for MainChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Creates `n` greenlets, switches into each once and lets it finish: one greenlet lifetime
/// per operation (Python's `greenlet(lambda: None).switch()`).
pub fn lifetimes(n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let g = Greenlet::new(|_: Value| Ok(()));
        black_box(g.switch(()).expect("a lifetime"));
        debug_assert!(g.is_dead());
    }
    start.elapsed()
}

// The floors: the same switching patterns written directly on corosensei, with none of the
// greenlet bookkeeping.

type Bare = Coroutine<(), (), ()>;

thread_local! {
    /// Which floor coroutine the trampoline resumes next: what a switch names.
    static NEXT: Cell<usize> = const { Cell::new(0) };
}

/// The bare trampoline floor (NOTES): two coroutines that each name the other and suspend back
/// to a per-thread loop, which resumes whichever was named. One switch is one suspend plus
/// one resume, as for two non-main greenlets.
pub struct FloorTrampoline {
    coroutines: [Bare; 2],
}

impl FloorTrampoline {
    /// Creates both coroutines.
    pub fn new() -> FloorTrampoline {
        let make = |me: usize| {
            Coroutine::new(move |yielder: &Yielder<(), ()>, ()| loop {
                NEXT.set(1 - me);
                yielder.suspend(());
            })
        };
        FloorTrampoline {
            coroutines: [make(0), make(1)],
        }
    }

    /// Performs `switches` switches; returns their wall time.
    pub fn run(&mut self, switches: u64) -> Duration {
        run_trampoline(&mut self.coroutines, switches)
    }
}

/// The loop both trampoline floors run: resume whichever coroutine the last switch named.
#[inline(always)]
fn run_trampoline(coroutines: &mut [Bare; 2], switches: u64) -> Duration {
    NEXT.set(0);
    let start = Instant::now();
    for _ in 0..switches {
        let next = NEXT.get();
        black_box(coroutines[next].resume(()));
    }
    start.elapsed()
}

/// The bare trampoline again, but each switch is a call to an out-of-line function that
/// suspends and, once resumed, returns: as in the runtime, where `switch()` returns on a
/// different stack from the one that called the trampoline. Same work as
/// [`FloorTrampoline`] plus one call and one return per switch; the difference in wall time
/// is what mispredicted returns cost (the CPU's return-stack predictor sees a `call` on one
/// stack answered by a `ret` on another).
pub struct FloorTrampolineCall {
    coroutines: [Bare; 2],
}

#[inline(never)]
fn switch_out(yielder: &Yielder<(), ()>, to: usize) {
    NEXT.set(to);
    yielder.suspend(());
}

impl FloorTrampolineCall {
    /// Creates both coroutines.
    pub fn new() -> FloorTrampolineCall {
        let make = |me: usize| {
            Coroutine::new(move |yielder: &Yielder<(), ()>, ()| loop {
                switch_out(yielder, 1 - me);
            })
        };
        FloorTrampolineCall {
            coroutines: [make(0), make(1)],
        }
    }

    /// Performs `switches` switches; returns their wall time.
    pub fn run(&mut self, switches: u64) -> Duration {
        run_trampoline(&mut self.coroutines, switches)
    }
}

impl Default for FloorTrampolineCall {
    fn default() -> Self {
        FloorTrampolineCall::new()
    }
}

impl Default for FloorTrampoline {
    fn default() -> Self {
        FloorTrampoline::new()
    }
}

/// The main<->child floor: one coroutine resumed from the thread's stack and suspending back.
/// One switch is half a resume+suspend round trip (one stack switch), as main<->child.
pub struct FloorMainChild {
    coroutine: Bare,
}

impl FloorMainChild {
    /// Creates the coroutine.
    pub fn new() -> FloorMainChild {
        FloorMainChild {
            coroutine: Coroutine::new(|yielder: &Yielder<(), ()>, ()| loop {
                yielder.suspend(());
            }),
        }
    }

    /// Performs `switches` switches; returns their wall time.
    pub fn run(&mut self, switches: u64) -> Duration {
        let rounds = switches.div_ceil(2);
        let start = Instant::now();
        for _ in 0..rounds {
            black_box(self.coroutine.resume(()));
        }
        start
            .elapsed()
            .mul_f64(switches as f64 / (2 * rounds).max(1) as f64)
    }
}

impl Default for FloorMainChild {
    fn default() -> Self {
        FloorMainChild::new()
    }
}

// The peer: the `context` crate (Boost.Context's `jump_fcontext`), a direct symmetric switch:
// one jump per transfer, between any two contexts, with nothing around it. Its contexts are
// raw machine state, so driving them is unsafe; each block says why it is sound here.

/// What a peer context is told when it is resumed: a pointer to the job it runs.
struct PeerJob {
    /// Switches to make (pings and pongs together).
    switches: u64,
    /// The time they took, written by the pinging context.
    elapsed: Duration,
}

thread_local! {
    /// The pong context, suspended, that the ping context resumes first in each job.
    static PEER_PONG: Cell<Option<context::Context>> = const { Cell::new(None) };
}

/// Two `context` contexts switching directly to each other ("ping" and "pong"); the thread's
/// own stack only starts a job and receives its time. One switch is one `resume`, as a
/// transfer between two non-main greenlets is one stack switch.
pub struct PeerContextTwo {
    ping: Option<context::Context>,
    _stacks: [context::stack::ProtectedFixedSizeStack; 2],
}

extern "C" fn peer_pong(mut t: context::Transfer) -> ! {
    loop {
        // SAFETY: `t.context` is the context that resumed this one (ping), suspended in its
        // own `resume` and resumed nowhere else; its stack lives in the `PeerContextTwo`.
        t = unsafe { t.context.resume(0) };
    }
}

extern "C" fn peer_ping(mut t: context::Transfer) -> ! {
    loop {
        // `t` came from the thread's stack: its data is the job, its context the way back.
        let job = t.data as *mut PeerJob;
        // SAFETY: the job lives on the stack of `PeerContextTwo::run`, which waits in its
        // `resume` until this context resumes it below.
        let switches = unsafe { (*job).switches };
        let mut pong = PEER_PONG.take().expect("pong is parked");
        let rounds = switches.div_ceil(2);
        let start = Instant::now();
        for _ in 0..rounds {
            // SAFETY: `pong` is suspended (fresh, or in its own `resume`), with a live stack.
            let back = unsafe { pong.resume(0) };
            pong = back.context;
        }
        let elapsed = start.elapsed();
        PEER_PONG.set(Some(pong));
        // SAFETY: as above: the job outlives this write.
        unsafe { (*job).elapsed = elapsed.mul_f64(switches as f64 / (2 * rounds).max(1) as f64) };
        // SAFETY: `t.context` is the thread's stack, waiting in `run`'s `resume`.
        t = unsafe { t.context.resume(0) };
    }
}

impl PeerContextTwo {
    /// Creates both contexts on 64 KiB stacks (guard pages included).
    pub fn new() -> PeerContextTwo {
        let stacks = [
            context::stack::ProtectedFixedSizeStack::new(64 * 1024).expect("a stack"),
            context::stack::ProtectedFixedSizeStack::new(64 * 1024).expect("a stack"),
        ];
        // SAFETY: the stacks are stored in the returned value with the contexts made on
        // them, and outlive every resume of those contexts (made only by `run`).
        let (ping, pong) = unsafe {
            (
                context::Context::new(&stacks[0], peer_ping),
                context::Context::new(&stacks[1], peer_pong),
            )
        };
        PEER_PONG.set(Some(pong));
        PeerContextTwo {
            ping: Some(ping),
            _stacks: stacks,
        }
    }

    /// Performs `switches` switches between ping and pong; returns their wall time.
    pub fn run(&mut self, switches: u64) -> Duration {
        let mut job = PeerJob {
            switches,
            elapsed: Duration::ZERO,
        };
        let ping = self.ping.take().expect("ping is parked");
        // SAFETY: `ping` is suspended (fresh, or in its resume of this stack) on a live stack;
        // it reads and writes `job` only until it resumes us.
        let back = unsafe { ping.resume(&mut job as *mut PeerJob as usize) };
        self.ping = Some(back.context);
        job.elapsed
    }
}

impl Default for PeerContextTwo {
    fn default() -> Self {
        PeerContextTwo::new()
    }
}

/// The thread's stack and one `context` context switching back and forth, as main <-> child.
pub struct PeerContextMainChild {
    child: Option<context::Context>,
    _stack: context::stack::ProtectedFixedSizeStack,
}

extern "C" fn peer_child(mut t: context::Transfer) -> ! {
    loop {
        // SAFETY: `t.context` is the thread's stack, suspended in `run`'s `resume`.
        t = unsafe { t.context.resume(0) };
    }
}

impl PeerContextMainChild {
    /// Creates the context on a 64 KiB stack.
    pub fn new() -> PeerContextMainChild {
        let stack = context::stack::ProtectedFixedSizeStack::new(64 * 1024).expect("a stack");
        // SAFETY: the stack is stored with the context and outlives every resume of it.
        let child = unsafe { context::Context::new(&stack, peer_child) };
        PeerContextMainChild {
            child: Some(child),
            _stack: stack,
        }
    }

    /// Performs `switches` switches (half of them to the child); returns their wall time.
    pub fn run(&mut self, switches: u64) -> Duration {
        let mut child = self.child.take().expect("the child is parked");
        let rounds = switches.div_ceil(2);
        let start = Instant::now();
        for _ in 0..rounds {
            // SAFETY: `child` is suspended (fresh, or in its own `resume`) on a live stack.
            let back = unsafe { child.resume(0) };
            child = back.context;
        }
        let elapsed = start.elapsed();
        self.child = Some(child);
        elapsed.mul_f64(switches as f64 / (2 * rounds).max(1) as f64)
    }
}

impl Default for PeerContextMainChild {
    fn default() -> Self {
        PeerContextMainChild::new()
    }
}

/// Every case by name: what `switch_loop` accepts and what the report prints. The second
/// field says whether the case counts switches (`true`) or greenlet lifetimes.
pub const CASES: &[(&str, bool)] = &[
    ("switch_two_greenlets", true),
    ("switch_two_greenlets_u64", true),
    ("switch_main_child", true),
    ("switch_main_child_u64", true),
    ("switch_two_greenlets_traced", true),
    ("switch_main_child_traced", true),
    ("lifetime", false),
    ("floor_trampoline", true),
    ("floor_trampoline_call", true),
    ("floor_main_child", true),
    ("peer_context_two", true),
    ("peer_context_main_child", true),
];

/// Runs the named case for `n` operations after setting it up; `None` for an unknown name.
pub fn run_case(name: &str, n: u64) -> Option<Duration> {
    let elapsed = match name {
        "switch_two_greenlets" => TwoGreenlets::new(Payload::Unit).run(n),
        "switch_two_greenlets_u64" => TwoGreenlets::new(Payload::U64).run(n),
        "switch_main_child" => MainChild::new(Payload::Unit).run(n),
        "switch_main_child_u64" => MainChild::new(Payload::U64).run(n),
        "switch_two_greenlets_traced" => {
            let w = TwoGreenlets::new(Payload::Unit);
            maybe_traced(true, || w.run(n))
        }
        "switch_main_child_traced" => {
            let w = MainChild::new(Payload::Unit);
            maybe_traced(true, || w.run(n))
        }
        "lifetime" => {
            lifetimes(1); // the first lifetime creates the thread state and warms a pool
            lifetimes(n)
        }
        "floor_trampoline" => FloorTrampoline::new().run(n),
        "floor_trampoline_call" => FloorTrampolineCall::new().run(n),
        "floor_main_child" => FloorMainChild::new().run(n),
        "peer_context_two" => PeerContextTwo::new().run(n),
        "peer_context_main_child" => PeerContextMainChild::new().run(n),
        _ => return None,
    };
    Some(elapsed)
}
