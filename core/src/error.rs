//! The crate's error: every fallible public operation of `cmdb-core` converts into it. Each
//! part keeps its own precise enum (`StoreError`, `AccessError`, ...) as a variant, so callers
//! can match on exactly what went wrong.

use crate::access::AccessError;
use crate::baseline::BaselineError;
use crate::change::ChangeError;
use crate::ci::CiError;
use crate::event::EnvelopeError;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum Error {
    #[error(transparent)]
    /// Passed on as it is.
    Store(#[from] StoreError),
    #[error(transparent)]
    /// Passed on as it is.
    Access(#[from] AccessError),
    #[error(transparent)]
    /// Passed on as it is.
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    /// Passed on as it is.
    Ci(#[from] CiError),
    #[error(transparent)]
    /// Passed on as it is.
    Baseline(#[from] BaselineError),
    #[error(transparent)]
    /// Passed on as it is.
    Change(#[from] ChangeError),
    #[error(transparent)]
    /// Passed on as it is.
    Control(#[from] crate::control::ControlError),
    #[error(transparent)]
    /// Passed on as it is.
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    /// Passed on as it is.
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    /// Passed on as it is.
    Release(#[from] crate::release::ReleaseError),
    #[error(transparent)]
    /// Passed on as it is.
    Outbound(#[from] crate::outbound::OutboundError),
    #[error(transparent)]
    /// Passed on as it is.
    Discovery(#[from] crate::discovery::DiscoveryError),
    #[error(transparent)]
    /// Passed on as it is.
    Evidence(#[from] crate::evidence::EvidenceError),
    #[error(transparent)]
    /// Passed on as it is.
    Redaction(#[from] crate::redaction::RedactionError),
    #[error(
        "gave up after {attempts} attempts because stream {stream} kept changing under concurrent writers; retry the command"
    )]
    Contended { stream: String, attempts: usize },
    #[error("a {decider} command would read {keys} streams; the bound is {bound} (max_keys_per_command)")]
    /// A … command would read … streams; the bound is … (max_keys_per_command).
    TooManyReads { decider: &'static str, keys: usize, bound: usize },
    #[error("a {decider} command kept naming more streams to read after {bound} rounds (max_read_rounds)")]
    /// A … command kept naming more streams to read after … rounds (max_read_rounds).
    TooManyReadRounds { decider: &'static str, bound: usize },
    #[error("internal error: {0}")]
    Internal(String),
}
