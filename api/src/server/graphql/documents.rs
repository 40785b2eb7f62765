//! Parsed queries kept between requests (issue 15, part 7).
//!
//! Dashboards and pipelines send the same few query texts again and again with other
//! variables. async-graphql's parser is a PEG parser that allocates per token, so parsing a
//! query costs more than answering a one-CI question. The first request of a text parses it;
//! the next ones clone the kept syntax tree (async-graphql removes `@skip`ped selections from
//! its copy, so each request needs its own). Texts longer than [`MAX_KEPT_QUERY_BYTES`] are
//! parsed each time (rare, and they would crowd the cache); at most [`MAX_KEPT_DOCUMENTS`]
//! are kept, least recently used out first. A parse error is not kept: it is reported again.

use std::sync::{Arc, Mutex};

use async_graphql::parser::types::ExecutableDocument;

/// Most query texts kept.
pub const MAX_KEPT_DOCUMENTS: usize = 512;
/// Longest query text kept, in bytes.
pub const MAX_KEPT_QUERY_BYTES: usize = 16 * 1024;

/// The kept documents by their text.
pub struct Documents {
    kept: Mutex<lru::LruCache<String, Arc<ExecutableDocument>>>,
}

impl Default for Documents {
    fn default() -> Self {
        let bound = std::num::NonZeroUsize::new(MAX_KEPT_DOCUMENTS).unwrap_or(std::num::NonZeroUsize::MIN);
        Documents { kept: Mutex::new(lru::LruCache::new(bound)) }
    }
}

impl Documents {
    /// Gives `request` its parsed document from the cache, parsing (and keeping) it first if
    /// needed. Errors are async-graphql's parse errors.
    pub fn prepare(&self, request: &mut async_graphql::Request) -> Result<(), async_graphql::ServerError> {
        if request.query.len() > MAX_KEPT_QUERY_BYTES {
            return request.parsed_query().map(|_| ());
        }
        let found = self.lock().get(request.query.as_str()).cloned();
        if let Some(kept) = found {
            metrics::counter!("graphql_documents_kept_hits_total").increment(1);
            request.set_parsed_query((*kept).clone());
            return Ok(());
        }
        let document = request.parsed_query()?.clone();
        self.lock().put(request.query.clone(), Arc::new(document));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, Arc<ExecutableDocument>>> {
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many texts are kept.
    pub fn kept_count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_text_is_parsed_once_and_a_bad_one_is_never_kept() {
        let documents = Documents::default();
        let query = "query($id: ID!) { at { ci(id: $id) { name } } }";
        let mut first = async_graphql::Request::new(query);
        documents.prepare(&mut first).expect("parses");
        let mut second = async_graphql::Request::new(query);
        documents.prepare(&mut second).expect("kept");
        assert_eq!(documents.kept_count(), 1);
        assert_eq!(
            format!("{:?}", first.parsed_query().expect("parsed")),
            format!("{:?}", second.parsed_query().expect("parsed")),
            "the same document"
        );
        let mut bad = async_graphql::Request::new("{ at { ci(id: ");
        assert!(documents.prepare(&mut bad).is_err());
        assert_eq!(documents.kept_count(), 1, "a parse error is not kept");
        let long = format!("{{ head {{ position }} }} #{}", "x".repeat(MAX_KEPT_QUERY_BYTES));
        let mut long_request = async_graphql::Request::new(long);
        documents.prepare(&mut long_request).expect("parses");
        assert_eq!(documents.kept_count(), 1, "a text past the bound is parsed but not kept");
        for n in 0..MAX_KEPT_DOCUMENTS + 10 {
            let mut request = async_graphql::Request::new(format!("{{ head {{ position }} }} # {n}"));
            documents.prepare(&mut request).expect("parses");
        }
        assert_eq!(documents.kept_count(), MAX_KEPT_DOCUMENTS, "the count bound holds");
    }
}
