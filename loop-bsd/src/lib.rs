#![warn(missing_docs)]
//! placeholder
