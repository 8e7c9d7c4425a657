//! Semantic validation: cross-field rules and what kresd 5.x can do. Collects every error.

use super::error::{ConfigError, ConfigErrors};
use super::{CONFIG_VERSION, ResolverConfig};

/// Runs every rule; returns all errors.
pub(crate) fn validate(config: &ResolverConfig) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    if config.version != CONFIG_VERSION {
        errors.push(ConfigError::new(
            "/version",
            format!(
                "unsupported configuration version {}; only version {CONFIG_VERSION} is supported",
                config.version
            ),
        ));
    }
    ConfigErrors(errors).into_result()
}
