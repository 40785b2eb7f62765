//! Large lists written straight as JSON (issue 15, part 7).
//!
//! async-graphql answers every field with a value: a day's diff (5,000 entries, each with two
//! CIs of ten fields) is a tree of ~150,000 values, built field by field, then written, then
//! freed. Over HTTP that took 72 ms of which the diff itself is ~15. A list whose items
//! implement [`RenderJson`] is instead written as JSON text straight from the projection's data
//! when two things hold:
//! - the request came over HTTP, whose handler puts [`RawAnswers`] in the request's data and
//!   writes the answer with [`write_batch`] (anything else that executes the schema, a
//!   WebSocket operation or a test calling `execute`, gets the general path);
//! - the items' selection is plain: fields the item knows, without arguments, aliases allowed,
//!   `__typename` allowed, no directive, no response key twice. Fragments (named or inline, as
//!   Apollo and Relay clients write every selection) count as their fields, in place, when
//!   they are on the item's own type and carry no directive.
//!
//! Otherwise the list is resolved as any other ([`resolve_in_turn`]), so an answer never
//! depends on which path ran: the tests hold the two byte-equal over random selections.
//!
//! The text travels in the answer's value tree as one `Value::Binary` starting with [`MAGIC`]
//! (no type of the schema answers binary data). [`write_batch`] writes a response as
//! `serde_json` would and splices the text in; the limits extension counts a blob's fields and
//! bytes as if they had resolved one by one ([`decode`]).

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{self, Write};

use async_graphql::parser::types::{Field, FragmentDefinition, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::{BatchResponse, ContextSelectionSet, OutputType, Positioned, Response, ServerResult, Value};

use super::lists::resolve_in_turn;

/// In a request's data: its answer is written by [`write_batch`], so lists may be written as
/// text, up to `max_response_bytes` (past it the answer is refused as a whole).
#[derive(Clone, Copy, Debug)]
pub struct RawAnswers {
    /// The server's `max_response_bytes`: a blob stops growing past it.
    pub max_response_bytes: usize,
}

/// The first bytes of a blob of JSON text in a value tree.
const MAGIC: &[u8; 8] = b"\0cmdbjs\0";
/// Magic, the field count (u64, little endian), whether the text is whole (one byte).
const HEADER_BYTES: usize = MAGIC.len() + 8 + 1;

/// A blob of JSON text found in a value tree.
#[derive(Debug, PartialEq, Eq)]
pub struct Blob<'a> {
    /// How many fields the text answers (what the limits count as resolved).
    pub fields: u64,
    /// False when writing stopped at the byte bound: the text is cut and must not be sent.
    pub complete: bool,
    /// The text.
    pub json: &'a [u8],
}

/// The blob `value` carries, if it is one.
pub fn decode(value: &Value) -> Option<Blob<'_>> {
    let Value::Binary(bytes) = value else { return None };
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let (fields, rest) = rest.split_first_chunk::<8>()?;
    let (&complete, json) = rest.split_first()?;
    Some(Blob { fields: u64::from_le_bytes(*fields), complete: complete == 1, json })
}

/// JSON text being written for one list, with the count of fields written.
pub struct JsonOut {
    buf: Vec<u8>,
    bound_bytes: usize,
    fields: u64,
}

impl JsonOut {
    fn new(bound_bytes: usize) -> JsonOut {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&[0; HEADER_BYTES - MAGIC.len()]);
        JsonOut { buf, bound_bytes, fields: 0 }
    }

    /// Reserves room for `items` more items of `item_bytes` each, an eighth more for the
    /// spread, never past the bound.
    fn reserve_for(&mut self, items: usize, item_bytes: usize) {
        let estimate = items.saturating_mul(item_bytes.saturating_add(item_bytes / 8));
        let room = (HEADER_BYTES + self.bound_bytes).saturating_sub(self.buf.len());
        self.buf.reserve(estimate.min(room));
    }

    /// Whether the text has passed the bound (the writer stops at the next item).
    pub fn full(&self) -> bool {
        self.buf.len() - HEADER_BYTES > self.bound_bytes
    }

    /// Text that is JSON already (punctuation, a pre-written key).
    #[inline]
    pub fn raw(&mut self, text: &[u8]) {
        self.buf.extend_from_slice(text);
    }

    /// A string, escaped.
    #[inline]
    pub fn string(&mut self, text: &str) {
        self.json(text);
    }

    /// `null`.
    #[inline]
    pub fn null(&mut self) {
        self.raw(b"null");
    }

    /// A value written by serde (an attribute map, a number).
    #[inline]
    pub fn json<T: serde::Serialize + ?Sized>(&mut self, value: &T) {
        // Writing to a Vec fails only for a value serde cannot write (a map with non-string
        // keys): none of the values written here.
        let written = serde_json::to_writer(&mut self.buf, value);
        debug_assert!(written.is_ok(), "a value the answer holds is JSON");
    }

    /// A string written from its `Display` (ids: no character to escape).
    #[inline]
    pub fn display(&mut self, value: impl std::fmt::Display) {
        let start = self.buf.len();
        self.buf.push(b'"');
        let _ = write!(self.buf, "{value}");
        self.buf.push(b'"');
        debug_assert!(
            serde_json::from_slice::<String>(&self.buf[start..]).is_ok_and(|s| s.len() + 2 == self.buf.len() - start),
            "displayed without characters to escape"
        );
    }

    /// An enum's value as the schema names it (`LIVE`).
    #[inline]
    pub fn enum_value<T: async_graphql::resolver_utils::EnumType>(&mut self, value: T) {
        match async_graphql::resolver_utils::enum_value(value) {
            Value::Enum(name) => self.string(name.as_str()),
            other => self.json(&other),
        }
    }

    fn finish(mut self, complete: bool) -> Value {
        self.buf[MAGIC.len()..MAGIC.len() + 8].copy_from_slice(&self.fields.to_le_bytes());
        self.buf[HEADER_BYTES - 1] = u8::from(complete);
        Value::Binary(self.buf.into())
    }
}

/// One entry of an object's plan: its response key written as JSON (`"key":`) and what it
/// answers.
pub struct Planned<F> {
    key: Vec<u8>,
    part: Part<F>,
}

enum Part<F> {
    Typename,
    Field(F),
}

/// How to write one object for a selection: its entries in the selection's order.
pub struct Plan<F> {
    /// The type's name as JSON, for `__typename`.
    typename: Vec<u8>,
    entries: Vec<Planned<F>>,
}

/// The fragments a request's document defines, by name: what its spreads refer to.
pub type Fragments = std::collections::HashMap<async_graphql::Name, Positioned<FragmentDefinition>>;

/// The fields `set` selects on the type `typename`, in the document's order, each fragment
/// replaced by its own fields (GraphQL's field collection, for the cases written here). `None`
/// when a fragment is on another type (an interface, say), carries a directive, or nests past
/// [`MAX_FRAGMENT_NESTING`](super::cost::MAX_FRAGMENT_NESTING) (validation refuses cycles first).
fn collect_fields<'a>(
    set: &'a SelectionSet,
    typename: &str,
    fragments: &'a Fragments,
    nesting: usize,
    fields: &mut Vec<&'a Positioned<Field>>,
) -> Option<()> {
    if nesting > super::cost::MAX_FRAGMENT_NESTING {
        return None;
    }
    for item in &set.items {
        let inner = match &item.node {
            Selection::Field(selected) => {
                fields.push(selected);
                continue;
            }
            Selection::FragmentSpread(spread) => {
                let definition = &fragments.get(&spread.node.fragment_name.node)?.node;
                let on_this_type = definition.type_condition.node.on.node == typename;
                if !spread.node.directives.is_empty() || !definition.directives.is_empty() || !on_this_type {
                    return None;
                }
                &definition.selection_set.node
            }
            Selection::InlineFragment(inline) => {
                let on_this_type = inline.node.type_condition.as_ref().is_none_or(|c| c.node.on.node == typename);
                if !inline.node.directives.is_empty() || !on_this_type {
                    return None;
                }
                &inline.node.selection_set.node
            }
        };
        collect_fields(inner, typename, fragments, nesting + 1, fields)?;
    }
    Some(())
}

/// The plan of `set` on the type `typename`: `field` names what each selected field answers
/// (from its name and sub-selection), or `None` when it cannot be written here. `None` for the
/// whole set when any field cannot, or the set is not plain (module docs).
pub fn plan_of<F>(
    set: &SelectionSet,
    typename: &str,
    fragments: &Fragments,
    mut field: impl FnMut(&str, &SelectionSet) -> Option<F>,
) -> Option<Plan<F>> {
    let mut selected_fields = Vec::with_capacity(set.items.len());
    collect_fields(set, typename, fragments, 0, &mut selected_fields)?;
    let mut keys: HashSet<&str> = HashSet::with_capacity(selected_fields.len());
    let mut entries = Vec::with_capacity(selected_fields.len());
    for selected in selected_fields {
        let Field { alias, name, arguments, directives, selection_set } = &selected.node;
        if !arguments.is_empty() || !directives.is_empty() {
            return None;
        }
        let key = alias.as_ref().unwrap_or(name).node.as_str();
        if !keys.insert(key) {
            return None;
        }
        let part = match name.node.as_str() {
            "__typename" => Part::Typename,
            other => Part::Field(field(other, &selection_set.node)?),
        };
        let mut key_json = serde_json::to_vec(key).ok()?;
        key_json.push(b':');
        entries.push(Planned { key: key_json, part });
    }
    Some(Plan { typename: serde_json::to_vec(typename).ok()?, entries })
}

/// Writes one object of `plan`, each field by `write`.
pub fn object<F>(out: &mut JsonOut, plan: &Plan<F>, mut write: impl FnMut(&mut JsonOut, &F)) {
    out.raw(b"{");
    for (index, entry) in plan.entries.iter().enumerate() {
        if index > 0 {
            out.raw(b",");
        }
        out.raw(&entry.key);
        match &entry.part {
            Part::Typename => out.raw(&plan.typename),
            Part::Field(field) => write(out, field),
        }
        out.fields += 1;
    }
    out.raw(b"}");
}

/// Items a list can write as JSON text.
pub trait RenderJson: OutputType + Sized {
    /// What the items' selection asks, decided once per list.
    type Plan;

    /// The plan of a selection on this type (its spreads read from `fragments`), or `None`
    /// when only the general path answers it.
    fn plan(set: &SelectionSet, fragments: &Fragments) -> Option<Self::Plan>;

    /// Writes each item as an object of `plan`, separated by commas, stopping early once
    /// `out` is full.
    fn render(ctx: &ContextSelectionSet<'_>, items: &[Self], plan: &Self::Plan, out: &mut JsonOut);
}

/// Writes `items` separated by commas with `write`, stopping once `out` is full.
pub fn items<T>(out: &mut JsonOut, items: &[T], mut write: impl FnMut(&mut JsonOut, &T)) {
    let start_bytes = out.buf.len();
    for (index, item) in items.iter().enumerate() {
        if out.full() {
            return;
        }
        if index == ESTIMATE_AFTER_ITEMS {
            out.reserve_for(items.len() - index, (out.buf.len() - start_bytes) / index);
        }
        if index > 0 {
            out.raw(b",");
        }
        write(out, item);
    }
}

/// After how many items a list's text reserves room for the rest, at the size of those: a
/// day's diff is 3.3 MB, and growing to it by doubling copied 4 MB and faulted in fresh pages
/// at every step.
const ESTIMATE_AFTER_ITEMS: usize = 16;

/// A list written as JSON text when it can be (module docs). Same GraphQL type as `Vec<T>`.
pub struct Rendered<T>(pub Vec<T>);

impl<T> From<Vec<T>> for Rendered<T> {
    fn from(items: Vec<T>) -> Self {
        Rendered(items)
    }
}

impl<T: RenderJson> OutputType for Rendered<T> {
    fn type_name() -> Cow<'static, str> {
        <Vec<T> as OutputType>::type_name()
    }

    fn qualified_type_name() -> String {
        <Vec<T> as OutputType>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Vec<T> as OutputType>::create_type_info(registry)
    }

    async fn resolve(&self, ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        if let Some(raw) = ctx.data_opt::<RawAnswers>()
            && let Some(plan) = T::plan(&field.node.selection_set.node, &ctx.query_env.fragments)
        {
            let mut out = JsonOut::new(raw.max_response_bytes);
            out.raw(b"[");
            T::render(ctx, &self.0, &plan, &mut out);
            out.raw(b"]");
            let complete = !out.full();
            metrics::counter!("graphql_lists_total", "written" => "as_text").increment(1);
            return Ok(out.finish(complete));
        }
        metrics::counter!("graphql_lists_total", "written" => "field_by_field").increment(1);
        resolve_in_turn(ctx, field, &self.0).await
    }
}

/// Writes an answer as `serde_json::to_writer` would, with the blobs of JSON text in its value
/// trees spliced in. A blob cut at the byte bound fails the write (the caller refuses the
/// answer as too large).
pub fn write_batch(out: &mut impl Write, response: &BatchResponse) -> io::Result<()> {
    match response {
        BatchResponse::Single(one) => write_response(out, one),
        BatchResponse::Batch(many) => {
            out.write_all(b"[")?;
            for (index, one) in many.iter().enumerate() {
                if index > 0 {
                    out.write_all(b",")?;
                }
                write_response(out, one)?;
            }
            out.write_all(b"]")
        }
    }
}

/// How many bytes of JSON text the blobs in `response` hold: the body is sized for them up
/// front (growing a 3.3 MB body by doubling copied it four times over).
pub fn text_bytes(response: &BatchResponse) -> usize {
    fn of(value: &Value) -> usize {
        match value {
            Value::List(items) => items.iter().map(of).sum(),
            Value::Object(fields) => fields.values().map(of).sum(),
            Value::Binary(_) => decode(value).map_or(0, |blob| blob.json.len()),
            _ => 0,
        }
    }
    match response {
        BatchResponse::Single(one) => of(&one.data),
        BatchResponse::Batch(many) => many.iter().map(|one| of(&one.data)).sum(),
    }
}

/// One response: `data`, then `extensions` and `errors` when there are any (serde's order).
fn write_response(out: &mut impl Write, response: &Response) -> io::Result<()> {
    out.write_all(b"{\"data\":")?;
    write_value(out, &response.data)?;
    if !response.extensions.is_empty() {
        out.write_all(b",\"extensions\":{")?;
        for (index, (key, value)) in response.extensions.iter().enumerate() {
            if index > 0 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *out, key).map_err(io::Error::other)?;
            out.write_all(b":")?;
            write_value(out, value)?;
        }
        out.write_all(b"}")?;
    }
    if !response.errors.is_empty() {
        out.write_all(b",\"errors\":")?;
        serde_json::to_writer(&mut *out, &response.errors).map_err(io::Error::other)?;
    }
    out.write_all(b"}")
}

fn write_value(out: &mut impl Write, value: &Value) -> io::Result<()> {
    match value {
        Value::List(items) => {
            out.write_all(b"[")?;
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.write_all(b",")?;
                }
                write_value(out, item)?;
            }
            out.write_all(b"]")
        }
        Value::Object(fields) => {
            out.write_all(b"{")?;
            for (index, (key, value)) in fields.iter().enumerate() {
                if index > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, key.as_str()).map_err(io::Error::other)?;
                out.write_all(b":")?;
                write_value(out, value)?;
            }
            out.write_all(b"}")
        }
        Value::Binary(_) => match decode(value) {
            Some(Blob { complete: true, json, .. }) => out.write_all(json),
            Some(_) => Err(io::Error::other("max_response_bytes")),
            None => serde_json::to_writer(out, value).map_err(io::Error::other),
        },
        scalar => serde_json::to_writer(out, scalar).map_err(io::Error::other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{Name, ServerError};

    fn sample() -> Value {
        let mut inner = async_graphql::indexmap::IndexMap::new();
        inner.insert(Name::new("quote\"d"), Value::String("tab\t, é, \u{1}, </script>".into()));
        inner.insert(Name::new("n"), Value::Number(serde_json::Number::from_f64(1.5).expect("finite")));
        inner.insert(Name::new("neg"), Value::Number((-7).into()));
        inner.insert(Name::new("enum"), Value::Enum(Name::new("LIVE")));
        inner.insert(Name::new("bin"), Value::Binary(vec![1u8, 2, 255].into()));
        inner.insert(Name::new("list"), Value::List(vec![Value::Null, Value::Boolean(true), Value::List(vec![])]));
        inner.insert(Name::new("empty"), Value::Object(Default::default()));
        let mut outer = async_graphql::indexmap::IndexMap::new();
        outer.insert(Name::new("a"), Value::Object(inner));
        Value::Object(outer)
    }

    fn written(response: &BatchResponse) -> Vec<u8> {
        let mut out = Vec::new();
        write_batch(&mut out, response).expect("write");
        out
    }

    #[test]
    fn an_answer_without_blobs_is_written_as_serde_writes_it() {
        let mut error = ServerError::new("bad \"thing\"", None);
        error.path = vec![async_graphql::PathSegment::Field("a".into()), async_graphql::PathSegment::Index(3)];
        let with_all = || {
            let mut response = Response::new(sample()).extension("cost", Value::Number(3.into()));
            response.errors = vec![error.clone()];
            response
        };
        for response in [
            BatchResponse::Single(Response::new(sample())),
            BatchResponse::Single(with_all()),
            BatchResponse::Single(Response::from_errors(vec![ServerError::new("x", None)])),
            BatchResponse::Batch(vec![Response::new(sample()), with_all()]),
            BatchResponse::Batch(vec![]),
        ] {
            let expected = serde_json::to_vec(&response).expect("serde");
            assert_eq!(String::from_utf8_lossy(&written(&response)), String::from_utf8_lossy(&expected));
        }
    }

    #[test]
    fn a_blob_is_spliced_and_counted_and_a_cut_one_refused() {
        let mut out = JsonOut::new(1_000);
        out.raw(b"[");
        let plan = plan_of(&SelectionSet::default(), "T", &Fragments::default(), |_, _| Some(())).expect("plan");
        object(&mut out, &plan, |_, ()| {});
        out.raw(b",");
        out.display(42);
        out.raw(b"]");
        out.fields += 2;
        let blob = out.finish(true);
        assert_eq!(decode(&blob), Some(Blob { fields: 2, complete: true, json: b"[{},\"42\"]" }));
        let mut fields = async_graphql::indexmap::IndexMap::new();
        fields.insert(Name::new("list"), blob);
        let response = BatchResponse::Single(Response::new(Value::Object(fields)));
        assert_eq!(written(&response), br#"{"data":{"list":[{},"42"]}}"#);
        assert_eq!(text_bytes(&response), b"[{},\"42\"]".len(), "what the body is sized for");

        let mut cut = JsonOut::new(4);
        cut.raw(b"[\"0123456789\"");
        assert!(cut.full());
        let response = BatchResponse::Single(Response::new(cut.finish(false)));
        assert!(write_batch(&mut Vec::new(), &response).is_err(), "a cut blob is never sent");
        assert_eq!(decode(&Value::Binary(vec![0u8, 1].into())), None, "other bytes are not a blob");
    }

    #[test]
    fn a_long_list_reserves_for_its_rest_but_never_past_the_bound() {
        let numbers: Vec<u32> = (0..1_000).collect();
        let mut roomy = JsonOut::new(1 << 20);
        items(&mut roomy, &numbers, |out, n| out.json(n));
        let expected = serde_json::to_vec(&numbers).expect("json");
        assert_eq!(&roomy.buf[HEADER_BYTES..], &expected[1..expected.len() - 1], "the same text");
        assert!(roomy.buf.capacity() >= roomy.buf.len());
        // Items of 1 KB: the estimate for the rest (10 MB) is far past a 20 KB bound, and the
        // text keeps the 64 KB it starts with.
        let long = vec!["x".repeat(1_024); 10_000];
        let mut tight = JsonOut::new(20 * 1024);
        items(&mut tight, &long, |out, s| out.string(s));
        assert!(tight.full(), "stopped at the bound");
        assert_eq!(tight.buf.capacity(), 64 * 1024, "reserved no more than the bound allows");
        let mut roomy_long = JsonOut::new(1 << 24);
        items(&mut roomy_long, &long, |out, s| out.string(s));
        assert!(roomy_long.buf.capacity() >= roomy_long.buf.len());
        assert!(roomy_long.buf.capacity() < 2 * roomy_long.buf.len(), "sized from the first items, not doubled");
        let mut short = JsonOut::new(1 << 20);
        items(&mut short, &numbers[..ESTIMATE_AFTER_ITEMS], |out, n| out.json(n));
        assert_eq!(short.buf.len() - HEADER_BYTES, "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15".len());
    }

    #[test]
    fn only_a_plain_selection_has_a_plan() {
        let plan = |query: &str| {
            let document = async_graphql::parser::parse_query(query).expect("parses");
            let (_, operation) = document.operations.iter().next().expect("an operation");
            let set = operation.node.selection_set.node.clone();
            let fragments: Fragments = document.fragments.clone().into_iter().collect();
            plan_of(&set, "T", &fragments, |name, _| (name != "unknown").then_some(name.to_owned()))
                .map(|p| p.entries.iter().map(|e| String::from_utf8_lossy(&e.key).into_owned()).collect::<Vec<_>>())
        };
        assert_eq!(
            plan("{ a b: c __typename }"),
            Some(vec!["\"a\":".into(), "\"b\":".into(), "\"__typename\":".into()])
        );
        assert_eq!(plan("{ a unknown }"), None, "a field only the general path knows");
        assert_eq!(plan("{ a a }"), None, "a key twice (async-graphql merges them)");
        assert_eq!(plan("{ a b: a }"), Some(vec!["\"a\":".into(), "\"b\":".into()]), "aliases are distinct keys");
        assert_eq!(plan("{ a(x: 1) }"), None, "arguments");
        assert_eq!(plan("{ a @include(if: true) }"), None, "directives");
        // Fragments on the type itself count as their fields, in the document's order.
        let keys = |names: &[&str]| Some(names.iter().map(|n| format!("\"{n}\":")).collect::<Vec<_>>());
        assert_eq!(plan("{ a ... on T { b } c }"), keys(&["a", "b", "c"]), "an inline fragment");
        assert_eq!(plan("{ ... { a } }"), keys(&["a"]), "an inline fragment without a type");
        assert_eq!(
            plan("{ c ...F } fragment F on T { a ...G } fragment G on T { b }"),
            keys(&["c", "a", "b"]),
            "spreads"
        );
        assert_eq!(plan("{ a ...F } fragment F on T { a }"), None, "a key twice through a fragment");
        assert_eq!(plan("{ ... on U { a } }"), None, "a fragment on another type");
        assert_eq!(plan("{ ...F } fragment F on U { a }"), None, "a spread on another type");
        assert_eq!(plan("{ ... on T @include(if: true) { a } }"), None, "a fragment's directive");
        assert_eq!(plan("{ ...F @skip(if: false) } fragment F on T { a }"), None, "a spread's directive");
        assert_eq!(plan("{ ...Missing }"), None, "an unknown fragment (validation refuses it first)");
        // A chain of spreads past the nesting bound is left to the general path.
        let mut chain = String::from("{ ...F0 } ");
        for i in 0..=super::super::cost::MAX_FRAGMENT_NESTING {
            chain.push_str(&format!("fragment F{i} on T {{ ...F{} }} ", i + 1));
        }
        chain.push_str(&format!("fragment F{} on T {{ a }}", super::super::cost::MAX_FRAGMENT_NESTING + 1));
        assert_eq!(plan(&chain), None, "nesting past the bound");
    }
}
