//! The simulated cluster's deterministic model.
//!
//! OWNER: sim-model helper.
