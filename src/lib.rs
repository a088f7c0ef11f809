//! metrics-bridge: a drop-in replacement for Kubernetes metrics-server that is also the
//! cluster's Prometheus target for resource metrics.
//!
//! Data flows in one direction:
//! `cluster` (watchers) → `scrape` (kubelet client) → `parse`/`decode` → `store` → `api` and
//! `exposition`. Nothing downstream calls back upstream. `server` wires the pieces together.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod decode;
pub mod duration;
pub mod exposition;
pub mod gofloat;
pub mod health;
pub mod https;
pub mod logging;
pub mod options;
pub mod parse;
pub mod scrape;
pub mod selector;
pub mod selfmetrics;
pub mod server;
pub mod status;
pub mod store;
pub mod tls;

/// The library's unit tests allocate through jemalloc too, as the binary does, so that
/// [`allocator::AllocatorStats`] has figures to report under test.
#[cfg(all(test, feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static TEST_ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
