//! The `metrics.k8s.io` API (v1beta1 and v1) as an aggregated API server serves it.
//!
//! OWNER: api helper.
