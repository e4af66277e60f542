//! Generates the USDT probe macros from `probes/greenlet.d`. The runtime needs nothing else at
//! build time: the BPF side is built by `gltop/build.rs`.

fn main() {
    println!("cargo:rerun-if-changed=probes/greenlet.d");
    usdt::Builder::new("probes/greenlet.d")
        .build()
        .expect("cannot generate the USDT probes from probes/greenlet.d");
}
