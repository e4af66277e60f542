#![allow(
    clippy::all,
    missing_docs,
    non_camel_case_types,
    dead_code,
    unused_imports
)]
include!(concat!(env!("OUT_DIR"), "/greenlet.skel.rs"));
