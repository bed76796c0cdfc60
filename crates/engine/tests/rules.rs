//! The contract's rules reached through the engine: each command's success and its error codes.

mod support;

use support::*;

include!("cases/rules.rs");
