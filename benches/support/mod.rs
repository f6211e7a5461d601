//! What every bench shares (SPEC §7): the same run's minimal one-call consume
//! (`reference`), Redis's own accounting of a phase (`redis_stats`: `INFO cpu` and
//! `INFO commandstats`), process CPU (`process`), flags (`args`) and the printed
//! figures (`report`). Each bench includes it with `#[path = "support/mod.rs"]`.
// Each bench uses a part of it.
#![allow(dead_code)]

pub mod args;
pub mod process;
pub mod redis_stats;
pub mod reference;
pub mod report;
