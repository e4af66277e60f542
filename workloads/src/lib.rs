//! Programs built on the greenlet runtime that gltop and the tests watch: `demo` (the
//! simulated server of `make demo`) and `workload` (the test oracle of the probe, script and
//! gltop tests: it counts its own events with `settrace` and reports them). This library
//! holds what they share.
//!
//! `blocker`'s scenarios (`src/blocking.rs`) are not part of it: a module that creates
//! greenlets carries probe notes, and in every program linking the library but not using the
//! module, the linker would drop the code and leave its notes pointing nowhere. `blocker` and
//! the root package's `tests/lint_blocking.rs` include the file with `#[path]`.

pub mod cli;
pub mod tracer;
