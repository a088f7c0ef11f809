//! `/livez`, `/readyz` and `/healthz` with metrics-server's checks.
//!
//! OWNER: options helper.
