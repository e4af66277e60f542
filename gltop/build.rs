//! Builds the BPF skeleton from the top-level `bpf/` (clang, libelf and zlib are needed here,
//! never by the runtime), and the USDT probe macros from `probes/greenlet.d`: gltop fires the
//! runtime's own `greenlet:switch` probe at itself to measure what one hit costs.

use std::env;
use std::path::PathBuf;

const PROBES: &str = "../probes/greenlet.d";
/// The BPF programs: (source, skeleton file, headers it includes).
const SKELETONS: [(&str, &str, &[&str]); 4] = [
    (
        "../bpf/greenlet.bpf.c",
        "greenlet.skel.rs",
        &["../bpf/greenlet.h", "../bpf/python.bpf.h", "../bpf/pycur.h"],
    ),
    (
        "../bpf/sample.bpf.c",
        "sample.skel.rs",
        &["../bpf/sample.h", "../bpf/sampled.h", "../bpf/pycur.h"],
    ),
    (
        "../bpf/profile.bpf.c",
        "profile.skel.rs",
        &["../bpf/sample.h"],
    ),
    (
        "../bpf/pysample.bpf.c",
        "pysample.skel.rs",
        &["../bpf/pysample.h"],
    ),
];

fn main() {
    println!("cargo:rerun-if-changed={PROBES}");
    usdt::Builder::new(PROBES)
        .build()
        .expect("cannot generate the USDT probes from probes/greenlet.d");
    for (src, skel, headers) in SKELETONS {
        build_skeleton(src, skel, headers);
    }
}

/// Compiles a BPF program of `bpf/` with clang and writes its libbpf-rs skeleton to
/// `$OUT_DIR/{skel}`, which `src/loader/skel.rs` includes.
fn build_skeleton(src: &str, skel: &str, headers: &[&str]) {
    println!("cargo:rerun-if-changed={src}");
    for h in headers {
        println!("cargo:rerun-if-changed={h}");
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    // The UAPI headers (asm/types.h and friends) live under the multiarch triplet.
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    if let Err(e) = libbpf_cargo::SkeletonBuilder::new()
        .source(src)
        .clang_args([multiarch.as_str(), "-I../bpf", "-Wall", "-Werror"])
        .build_and_generate(out.join(skel))
    {
        // One readable line per cause instead of a Debug dump.
        eprintln!("cannot build the BPF skeleton from {src} (needs clang, libelf, zlib):");
        for cause in e.chain() {
            eprintln!("  {cause}");
        }
        std::process::exit(1);
    }
}
