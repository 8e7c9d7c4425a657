//! Desired-config sources. Host mode reads a file ([`file`]).

pub mod file;
