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
    pub fn build_skeleton() {
        // Filled in by the loader work (issue 4).
    }
}
