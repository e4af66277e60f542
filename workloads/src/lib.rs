//! Programs built on the greenlet runtime that gltop and the tests watch: `demo` (the
//! simulated server of `make demo`), `workload` (the test oracle: it counts its own events
//! with `settrace` and reports them) and `gltop_target` (the target of gltop's tests).
//! This library holds what they share.

pub mod cli;
