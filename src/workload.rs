//! The standard benchmark workloads, shared by `cargo bench` and the CLI's
//! `bench` command so both measure the same thing.
