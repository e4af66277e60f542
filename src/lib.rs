#[cfg(feature = "gltop")]
pub mod loader;
