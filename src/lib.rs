//! quotad: exact, fail-closed monthly API quotas on Redis, with a crash-safe audit log.
//!
//! # Layout
//!
//! - [`quota`]: the domain (tiers, periods, keys, decisions); pure values, no I/O.
//! - [`store`]: Redis: the pool, every key name, the Lua scripts, error sorting.
//! - [`engine`]: consume, quota and key administration in terms of the store.
//! - [`config`]: the typed settings, from a TOML file and `QUOTAD_*` variables.
//! - [`metrics`]: metric names, described once.
//! - [`http`]: the HTTP API: accept loop, one routing match, handlers, `ApiError`.
//! - [`app`]: wires store, engine, HTTP server and audit writer; signals, drain, metrics.
//! - [`audit`]: the audit writer (shard streams → SQLite), queries and retention.
//! - [`cli`]: the `keys` admin subcommands.
//! - [`health`]: `quotad health`, the container health check (no curl needed).
//! - [`loadtest`]: `quotad bench`, a load tester for any running quotad over HTTP.
//!
//! # A consume, end to end
//!
//! `engine::Engine::consume` hashes the API key to its `key_id` and shard, then runs
//! `lua/consume.lua` with one EVALSHA: the script checks the key record, the
//! idempotency entry, the limit and the audit backlog, then XADDs the audit record,
//! INCRBYs the counter and stores the decision, all atomically in one slot. The
//! `audit` writer later reads the stream entry through the `quotad-audit` consumer
//! group, commits it to SQLite, and only then acknowledges and trims it.
//!
//! Over HTTP, `http::run` accepts the connection, `http::routes` matches
//! `POST /v1/consume`, the handler reads the body and the API key (`http::extract`),
//! validates it into a `ConsumeRequest` (`http::decode`), calls the engine, and
//! `http::headers` writes the decision with its rate-limit headers; any error
//! becomes its response in `http::error`.

#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod engine;
pub mod health;
pub mod http;
pub mod loadtest;
pub mod metrics;
pub mod quota;
pub mod store;
