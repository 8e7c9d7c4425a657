//! The kres-operator datamodel.
//!
//! Pure: serde + schemars types, validation, and Lua rendering. No I/O runtime.
//!
//! - [`config`]: `ResolverConfig`, the Knot Resolver 6 `config.yaml` model, and its validation.
//! - [`k8s`]: the `KnotResolver` custom resource and its validation profile.
//! - [`lua`]: rendering a validated config into kresd 5.x Lua; the one escaping function.

pub mod config;
pub mod k8s;
pub mod lua;
