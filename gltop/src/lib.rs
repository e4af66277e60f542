//! `gltop`'s library: the BPF loader ([`loader`]) that attaches to the `greenlet` USDT probes
//! of a running process and reads what the kernel aggregated into plain data, with the pure
//! arithmetic on it (rates, shares, the cost of tracing). The `gltop` binary draws it.
//!
//! Building this package needs clang, libelf and zlib (the BPF skeleton is compiled from the
//! workspace's `bpf/`); the `greenlet` runtime itself needs none of them.

#![warn(missing_docs)]

pub mod loader;
pub mod profile;
