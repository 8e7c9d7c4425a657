//! Desired-config sources. Host mode reads a file ([`file`]); API changes, reverts and
//! rollbacks are submitted to the same source, which writes them to the file ([`persist`]).
//!
//! A source runs every config through one pipeline (a [`Build`]: all validation rules with
//! pointers, then the desired state) and publishes only what passed, as an [`Accepted`] with a
//! change sequence number assigned at submission: the reconciler reports its outcome for that
//! number, so a submitter learns the fate of its own change.

pub mod file;
pub mod persist;

use std::sync::Arc;

use kres_crd::config::{ConfigErrors, ResolverConfig};

use crate::reconcile::{ChangeSeq, Desired};

/// The one config pipeline: every rule, then the desired state (host mode:
/// `host::desired::desired_from`).
pub type Build = Arc<dyn Fn(&ResolverConfig) -> Result<Desired, ConfigErrors> + Send + Sync>;

/// What a valid config needs on the machine before it may become desired (host mode: its cache
/// directory, created for or checked to belong to the workers). Runs after [`Build`] succeeded,
/// never for dry runs.
pub type Prepare = Arc<dyn Fn(&ResolverConfig) -> Result<(), ConfigErrors> + Send + Sync>;

/// Who submitted a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// The config file, read at start, on SIGHUP, `POST /reload` or `--watch`.
    File,
    /// An API change (`PUT`/`PATCH /v1/config`).
    Api,
    /// The last good config, put back after the fleet rejected an API change.
    Revert,
    /// A previous revision made desired again (`kresctl rollback`).
    Rollback,
}

/// A config that passed the pipeline, as published to the reconciler.
#[derive(Debug, PartialEq)]
pub struct Accepted {
    /// Change sequence number, assigned at submission, increasing per source.
    pub seq: ChangeSeq,
    /// Who submitted it.
    pub origin: Origin,
    /// The config.
    pub config: ResolverConfig,
    /// Its text as written to the file (the file's own text when read from it).
    pub text: String,
    /// What the fleet should run.
    pub desired: Desired,
}
