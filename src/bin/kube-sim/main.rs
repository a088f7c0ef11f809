//! kube-sim: a simulated Kubernetes cluster (API server, aggregation layer, kubelets) to run
//! and test metrics-bridge against.
#![forbid(unsafe_code)]

mod model;

fn main() {}
