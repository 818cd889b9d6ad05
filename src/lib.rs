//! ioloop facade (work in progress)
pub use loop_core::*;
