//! The `metrics.k8s.io` API (v1beta1 and v1) as an aggregated API server serves it.

pub mod negotiate;
pub mod quantity;
pub mod query;
pub mod request_info;
pub mod wire;

pub use request_info::{RequestInfo, RequestInfoError};
