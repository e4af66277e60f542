//! Generates the USDT probe macros from `probes/greenlet.d` (always), and the BPF skeleton
//! (only with the `gltop` feature, so the runtime alone never needs clang or libelf).

fn main() {
    println!("cargo:rerun-if-changed=probes/greenlet.d");
    usdt::Builder::new("probes/greenlet.d")
        .build()
        .expect("cannot generate the USDT probes from probes/greenlet.d");

    #[cfg(feature = "gltop")]
    bpf::build_skeleton();
}

#[cfg(feature = "gltop")]
mod bpf {
    use std::env;
    use std::path::PathBuf;

    const SRC: &str = "bpf/greenlet.bpf.c";
    const HEADER: &str = "bpf/greenlet.h";

    /// Compiles `bpf/greenlet.bpf.c` with clang and writes its libbpf-rs skeleton to
    /// `$OUT_DIR/greenlet.skel.rs`, which `src/loader/skel.rs` includes.
    pub fn build_skeleton() {
        println!("cargo:rerun-if-changed={SRC}");
        println!("cargo:rerun-if-changed={HEADER}");
        let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
        // The UAPI headers (asm/types.h and friends) live under the multiarch triplet.
        let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
        if let Err(e) = libbpf_cargo::SkeletonBuilder::new()
            .source(SRC)
            .clang_args([multiarch.as_str(), "-Ibpf", "-Wall", "-Werror"])
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
}
