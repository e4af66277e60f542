//! Builds the BPF skeleton from the top-level `bpf/` (clang, libelf and zlib are needed here,
//! never by the runtime), and the USDT probe macros from `probes/greenlet.d`: gltop fires the
//! runtime's own `greenlet:switch` probe at itself to measure what one hit costs.

use std::env;
use std::path::PathBuf;

const PROBES: &str = "../probes/greenlet.d";
const SRC: &str = "../bpf/greenlet.bpf.c";
const HEADER: &str = "../bpf/greenlet.h";

fn main() {
    println!("cargo:rerun-if-changed={PROBES}");
    usdt::Builder::new(PROBES)
        .build()
        .expect("cannot generate the USDT probes from probes/greenlet.d");
    build_skeleton();
    build_profile_skeleton();
}

/// Compiles `bpf/greenlet.bpf.c` with clang and writes its libbpf-rs skeleton to
/// `$OUT_DIR/greenlet.skel.rs`, which `src/loader/skel.rs` includes.
fn build_skeleton() {
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed={HEADER}");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    // The UAPI headers (asm/types.h and friends) live under the multiarch triplet.
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    if let Err(e) = libbpf_cargo::SkeletonBuilder::new()
        .source(SRC)
        .clang_args([multiarch.as_str(), "-I../bpf", "-Wall", "-Werror"])
        .build_and_generate(out.join("greenlet.skel.rs"))
    {
        // One readable line per cause instead of a Debug dump.
        eprintln!("cannot build the BPF skeleton from {SRC} (needs clang, libelf, zlib):");
        for cause in e.chain() {
            eprintln!("  {cause}");
        }
        std::process::exit(1);
    }
}

/// `gltop record`'s sampler (`bpf/profile.bpf.c`, on the layout of `bpf/sample.h`), built the
/// same way into `$OUT_DIR/profile.skel.rs`, which `src/profile/skel.rs` includes.
fn build_profile_skeleton() {
    const PROFILE_SRC: &str = "../bpf/profile.bpf.c";
    const SAMPLE_HEADER: &str = "../bpf/sample.h";
    println!("cargo:rerun-if-changed={PROFILE_SRC}");
    println!("cargo:rerun-if-changed={SAMPLE_HEADER}");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    if let Err(e) = libbpf_cargo::SkeletonBuilder::new()
        .source(PROFILE_SRC)
        .clang_args([multiarch.as_str(), "-I../bpf", "-Wall", "-Werror"])
        .build_and_generate(out.join("profile.skel.rs"))
    {
        eprintln!("cannot build the BPF skeleton from {PROFILE_SRC} (needs clang, libelf, zlib):");
        for cause in e.chain() {
            eprintln!("  {cause}");
        }
        std::process::exit(1);
    }
}
