//! Greenlets for Rust: symmetric stackful coroutines with the semantics of Python's
//! [greenlet](https://greenlet.readthedocs.io/), and tracing built in.
//!
//! A [`Greenlet`] runs a function on its own stack. Any greenlet can [`switch`] to any other
//! greenlet of the same thread, passing a [`Value`]; the one that switched away is suspended in
//! its `switch` call until some greenlet switches back to it. Every thread has a *main*
//! greenlet, the one that runs the thread's own stack ([`getcurrent`] returns it until
//! something switches away). When a greenlet's function returns, its result goes to its
//! *parent* (by default, the greenlet that created it).
//!
//! ```
//! use greenlet::{getcurrent, Greenlet};
//!
//! let main = getcurrent();
//! let producer = Greenlet::new(move |_| {
//!     for i in 0..3_u32 {
//!         main.switch(i)?; // hand `i` to main, wait to be resumed
//!     }
//!     Ok("done")
//! });
//! let mut got = Vec::new();
//! loop {
//!     let v = producer.switch(())?;
//!     match v.downcast::<u32>() {
//!         Ok(i) => got.push(i),
//!         Err(e) => {
//!             assert_eq!(e.into_value().downcast::<&str>().unwrap(), "done");
//!             break;
//!         }
//!     }
//! }
//! assert_eq!(got, [0, 1, 2]);
//! assert!(producer.is_dead());
//! # Ok::<(), greenlet::Error>(())
//! ```
//!
//! # Semantics
//! The runtime follows Python greenlet 3.x. The behaviour reference is
//! `docs/reference/python-greenlet-reference.md` in the repository: a `§N.M` ("spec §4.7") in
//! these docs, the sources and the tests is one of its numbered items, and `R1`-`R6` ("spec R4")
//! a section of `docs/reference/greenlet-semantics.md`, which maps it onto Rust. In short:
//! - [`Greenlet::switch`] starts an unstarted greenlet (its function receives the value),
//!   resumes a suspended one (its pending `switch` returns the value), returns the value at
//!   once when you switch to yourself, and redirects to the nearest live ancestor when the
//!   target is dead.
//! - An error returned by a greenlet comes out of its parent's pending call as `Err`;
//!   [`GreenletExit`] is the exception: it reaches the parent as a value. A panic escaping a
//!   greenlet is carried to its parent and keeps unwinding there; it never unwinds across a
//!   stack switch.
//! - [`Greenlet::throw`] raises an error inside another greenlet; [`Greenlet::kill`] throws a
//!   `GreenletExit`.
//! - Dropping the last handle to a suspended greenlet kills it (its destructors run); failures
//!   go to the [kill hook](set_kill_hook). [`kill_all`] kills every suspended greenlet of the
//!   thread, and a thread does it by itself when it exits.
//! - Handles are `!Send`: switching to another thread's greenlet does not compile.
//!
//! # Tracing
//! [`settrace`] installs a per-thread [`Tracer`] that sees one [`Event`] per transfer, in the
//! target greenlet, as Python's `greenlet.settrace` does; [`Recorder`] is a ready-made one for
//! tests. Every transfer also fires the USDT probes `greenlet:switch` / `greenlet:throw`
//! (origin and target ids), and greenlets fire `greenlet:new` and `greenlet:dead`, so
//! `bpftrace` and the `gltop` viewer can watch a running process. Unattached, a probe costs a
//! load and a branch.
//!
//! # Finding greenlets that block their thread
//! A greenlet that computes or waits in a system call for long without switching keeps every
//! other greenlet of its thread waiting. [`lint::BlockingChecker`] finds those in a test
//! (in-process, on [`settrace`]); gltop finds them in a running process. A hub or a scheduler
//! loop whose waiting is by design is marked with [`Builder::idle`] or
//! [`Greenlet::set_idle`] and never reported. [`sample`] publishes where a sampling profiler
//! (gltop's sampled mode) finds the running greenlet of a thread.
//!
//! # Stacks
//! Greenlets run on stacks from the [`stack`] module: carved from large slabs, with a guard
//! page each, pooled per thread, and named in a one-line report when they overflow. Its
//! [`GreenStack`](stack::GreenStack) is a corosensei stack, usable by any corosensei coroutine.
//!
//! [`switch`]: Greenlet::switch

#![warn(missing_docs)]
// Unsafe code is denied in the crate and allowed only at the top of the modules that need it,
// each saying what for: `switch` (the switch loop and each greenlet's coroutine slot), `thread`
// (the thread-local state pointer, handles made from plain pointers to greenlets, the tracer
// slot, the mailbox's word-wise read, the registry), `lifecycle` (the running greenlet
// borrowed by its own body), `probes` (the probe sites and their semaphores) and `stack`, with
// `stack::slab` and `stack::overflow` (mappings, guard pages, the overflow signal handler),
// `sample` (reading the thread pointer).
// Every unsafe block has a `// SAFETY:` comment (clippy's `undocumented_unsafe_blocks`,
// denied in Cargo.toml).
#![deny(unsafe_code)]

mod error;
mod greenlet;
mod lifecycle;
pub mod lint;
pub mod probes;
mod recorder;
pub mod sample;
pub mod stack;
mod switch;
mod thread;
mod trace;
mod transfer;
mod value;

pub use crate::error::{Error, GreenletExit, TypeMismatch};
pub use crate::greenlet::{getcurrent, name_main, Builder, Greenlet, DEFAULT_STACK_SIZE};
pub use crate::lifecycle::{kill_all, panic_message, set_kill_hook, KillFailure, KillHook};
pub use crate::recorder::{InjectedFailure, RecordedEvent, Recorder};
pub use crate::trace::{gettrace, settrace, Event, EventKind, TraceOutcome, Tracer};
pub use crate::value::{DowncastError, Value};
