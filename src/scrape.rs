//! Kubelet scraping: every `--metric-resolution`, GET each node's `/metrics/resource`.
//!
//! OWNER: pipeline helper.
