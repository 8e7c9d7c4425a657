//! The pod backend: one Pod per slot (`<name>-<i>`, `<name>-canary`), one immutable ConfigMap
//! per revision (rendered config + pod template), a Service selecting the serving pods and a
//! PodDisruptionBudget, all owned by the KnotResolver.

pub mod backend;
pub mod build;
pub mod observe;
pub mod render;
