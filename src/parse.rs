//! A zero-copy parser of the Prometheus text exposition format (version 0.0.4).
//!
//! OWNER: parse helper.
