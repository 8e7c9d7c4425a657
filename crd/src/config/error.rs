//! Validation errors: each names the field (JSON pointer), the rule, and where known the
//! line and column in the YAML source.

use std::fmt;

/// A 1-based position in the YAML source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Line, 1-based.
    pub line: usize,
    /// Column, 1-based.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem in a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub struct ConfigError {
    /// JSON pointer of the offending field (`/forward/0/servers/1`); empty for the whole document.
    pub pointer: String,
    /// What is wrong, naming the rule.
    pub message: String,
    /// Position in the YAML source, when parsed from YAML.
    pub location: Option<Location>,
}

impl ConfigError {
    /// An error at `pointer` without a location.
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
            location: None,
        }
    }

    /// The pointer as shown to users: `/` for the document root.
    pub fn display_pointer(&self) -> &str {
        if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = self.location {
            write!(f, "{loc}: ")?;
        }
        write!(f, "{}: {}", self.display_pointer(), self.message)
    }
}

/// All problems found in a configuration (never empty when returned as an error).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// One error.
    pub fn single(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![ConfigError::new(pointer, message)])
    }

    /// The errors.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates the errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// `Ok(())` when empty, else `Err(self)`.
    pub fn into_result(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}
