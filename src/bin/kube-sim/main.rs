//! kube-sim: a simulated Kubernetes cluster (API server, aggregation layer, kubelets) to run
//! and test metrics-bridge against.
#![forbid(unsafe_code)]
#![allow(dead_code)]

mod auth;
mod model;
mod objects;
mod pki;

fn main() {}
