//! greenlet (stack branch: the lead owns this file and wires the modules in at merge).

#[doc(hidden)]
pub mod stack;
