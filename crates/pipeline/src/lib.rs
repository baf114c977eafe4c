//! The per-file pipeline of radveil: open an input once, parse it once, run the steps a
//! command asked for on the parsed object, encode once, write once.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
