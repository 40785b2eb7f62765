//! Importers (issue 17, part 1): each reads one kind of file and yields raw items and raw
//! relationships ([`RawItem`], [`RawRelationship`]) to a [`Sink`], streaming: a file is read
//! once from front to back and only one resource, object or component is held at a time (plus
//! the small per-item references relationships need). Mapping them to CI classes, names and
//! identities is the rules' business (`cmdb_core::discovery::rules`), recording them the
//! application's (`app::discovery`).
//!
//! - [`terraform`]: Terraform state, format 4 (`terraform show -json` is not a state file);
//! - [`kubernetes`]: multi-document YAML manifests, and `kubectl get -o json` (a `List`);
//! - [`cyclonedx`]: CycloneDX JSON SBOMs, spec 1.2 to 1.6;
//! - [`netbox`]: a NetBox export (Django `dumpdata` JSON).

pub mod cyclonedx;
pub mod kubernetes;
pub mod netbox;
pub mod terraform;

use std::io::BufRead;

use cmdb_core::Timestamp;
use cmdb_core::discovery::SourceKind;
pub use cmdb_core::discovery::rules::{RawItem, RawRelationship};

/// Why a file could not be imported. Nothing is recorded for it.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum ImportError {
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the file is not valid {format}: {detail}")]
    Syntax { format: &'static str, detail: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the file holds more than {bound} items (max_items_per_run)")]
    TooManyItems { bound: u64 },
}

/// Where an importer puts what it read.
pub trait Sink {
    /// An item.
    fn item(&mut self, item: RawItem) -> Result<(), ImportError>;
    /// A relationship between two items' local references.
    fn relationship(&mut self, relationship: RawRelationship) -> Result<(), ImportError>;
}

/// What a file says about itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileFacts {
    /// The scope it covers, where the file names one (a state's lineage, a BOM's serial number).
    pub scope: Option<String>,
    /// When the source says it observed, where it says.
    pub observed_at: Option<Timestamp>,
}

/// Reads a file of `source` into `sink`.
pub fn read(source: SourceKind, input: impl BufRead, sink: &mut dyn Sink) -> Result<FileFacts, ImportError> {
    match source {
        SourceKind::Terraform => terraform::read(input, sink),
        SourceKind::Kubernetes => kubernetes::read(input, sink),
        SourceKind::Cyclonedx => cyclonedx::read(input, sink),
        SourceKind::Netbox => netbox::read(input, sink),
    }
}

/// The JSON error of a streaming read, as an import error (serde's messages name the line and
/// column).
pub(crate) fn json_error(format: &'static str, error: &serde_json::Error) -> ImportError {
    if error.is_io() {
        return ImportError::Io(std::io::Error::other(error.to_string()));
    }
    ImportError::Syntax { format, detail: error.to_string() }
}

/// A sink's or a check's error carried through serde (which only knows its own errors); the
/// importer takes it back out.
pub(crate) struct Carried(pub Option<ImportError>);

impl Carried {
    /// Keeps `error` and gives serde an error that stops the read.
    pub(crate) fn stop<E: serde::de::Error>(&mut self, error: ImportError) -> E {
        let message = error.to_string();
        self.0 = Some(error);
        E::custom(message)
    }

    /// The error the read stopped with: the carried one, else serde's.
    pub(crate) fn or(self, format: &'static str, error: &serde_json::Error) -> ImportError {
        self.0.unwrap_or_else(|| json_error(format, error))
    }
}

/// Inserts a text field when it has a value.
pub(crate) fn put_text(
    fields: &mut std::collections::BTreeMap<String, serde_json::Value>,
    name: &str,
    value: Option<&str>,
) {
    if let Some(text) = value.filter(|t| !t.is_empty()) {
        fields.insert(name.to_owned(), serde_json::Value::String(text.to_owned()));
    }
}

/// A counting sink: what a validating first pass uses.
#[derive(Debug, Default)]
pub struct Counter {
    /// Items seen.
    pub items: u64,
    /// Relationships seen.
    pub relationships: u64,
}

impl Sink for Counter {
    fn item(&mut self, _item: RawItem) -> Result<(), ImportError> {
        self.items += 1;
        if self.items > cmdb_core::discovery::MAX_ITEMS_PER_RUN {
            return Err(ImportError::TooManyItems { bound: cmdb_core::discovery::MAX_ITEMS_PER_RUN });
        }
        Ok(())
    }

    fn relationship(&mut self, _relationship: RawRelationship) -> Result<(), ImportError> {
        self.relationships += 1;
        Ok(())
    }
}
