//! What safe Rust cannot say: the file's memory mapping and the CPU's CRC
//! instruction, and the other questions put to the kernel about a region's
//! file. This is the only module with `unsafe` code; every block says why
//! it holds in a `// SAFETY:` comment, and everything it exports is safe to
//! call.
#![allow(unsafe_code)]

pub(crate) mod checksum;
pub(crate) mod fault;
pub(crate) mod file;
pub(crate) mod mapping;
