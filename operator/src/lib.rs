//! kres-operator: converges a fleet of kresd workers to a declared configuration.

pub mod cli;
pub mod reconcile;
