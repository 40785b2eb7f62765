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
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Ci(#[from] CiError),
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(
        "gave up after {attempts} attempts because stream {stream} kept changing under concurrent writers; retry the command"
    )]
    Contended { stream: String, attempts: usize },
    #[error("a {decider} command would read {keys} streams; the bound is {bound} (max_keys_per_command)")]
    TooManyReads { decider: &'static str, keys: usize, bound: usize },
    #[error("a {decider} command kept naming more streams to read after {bound} rounds (max_read_rounds)")]
    TooManyReadRounds { decider: &'static str, bound: usize },
}
