//! What safe Rust cannot say: the file's memory mapping and the CPU's CRC
//! instruction. This is the only module with `unsafe` code; every block
//! says why it holds in a `// SAFETY:` comment, and everything it exports
//! is safe to call.
#![allow(unsafe_code)]

pub(crate) mod checksum;
pub(crate) mod mapping;
