//! Programs built on the greenlet runtime that gltop and the tests watch: `demo` (the
//! simulated server of `make demo`) and `workload` (the test oracle of the probe, script and
//! gltop tests: it counts its own events with `settrace` and reports them). This library
//! holds what they share, and the scenarios of `blocker` (greenlets that block their thread,
//! for gltop's blocking detection and sampled mode).

pub mod blocking;
pub mod cli;
