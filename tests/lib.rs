//! Workspace integration tests: architecture invariants and end-to-end scenarios, one file per scenario.
//!
//! The README's Rust examples are compiled and run as doc-tests of this crate, so they cannot drift from the code.

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
