//! A CI's attributes as one of its versions holds them (CM-1; issue 15, part 6).
//!
//! Every update that sets an attribute makes a new version with its own copy of the
//! attributes (versions that change none share one). On the large estate that is 300,000
//! copies of maps of one to six attributes. A `BTreeMap` allocates a node of eleven slots for
//! even one entry (some 640 bytes for `String` keys and JSON values), so those copies were the
//! largest single item of the graph's memory. [`AttributeMap`] keeps the entries in one vector
//! sorted by name, sized to what it holds: the same reads (`get`, `contains_key`, iteration in
//! name order) at a third to a sixth of the bytes.
//!
//! Names are [`Text`](crate::Text): inline up to 24 bytes, so decoding an update and copying
//! the attributes into its version allocate nothing for the names (they are all short).
//!
//! Invariant: the entries are sorted by name and no name appears twice, so iteration and
//! serialisation follow the same order as a `BTreeMap` of the same entries, and the JSON text
//! of a version (hashed into assessments, stored in checkpoints) is unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Text;

/// Attributes by name, sorted by name; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttributeMap {
    entries: Vec<(Text, Value)>,
}

impl AttributeMap {
    /// No attributes.
    pub fn new() -> AttributeMap {
        AttributeMap::default()
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(key, _)| key.as_str().cmp(name))
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.find(name).ok().map(|index| &self.entries[index].1)
    }

    /// Whether `name` is set.
    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// How many attributes are set.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets `name` to `value`; returns the value it replaced.
    pub fn insert(&mut self, name: impl AsRef<str>, value: Value) -> Option<Value> {
        let name = name.as_ref();
        match self.find(name) {
            Ok(index) => Some(std::mem::replace(&mut self.entries[index].1, value)),
            Err(index) => {
                self.entries.insert(index, (Text::from(name), value));
                None
            }
        }
    }

    /// Unsets `name`; returns the value it had.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.find(name).ok().map(|index| self.entries.remove(index).1)
    }

    /// The attributes in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> + DoubleEndedIterator {
        self.into_iter()
    }

    /// The names in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + DoubleEndedIterator {
        self.entries.iter().map(|(name, _)| name.as_str())
    }

    /// The values in name order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &Value> + DoubleEndedIterator {
        self.entries.iter().map(|(_, value)| value)
    }

    /// The same attributes as a `BTreeMap` (for code written against one).
    pub fn to_btree(&self) -> BTreeMap<String, Value> {
        self.entries.iter().map(|(name, value)| (name.to_string(), value.clone())).collect()
    }

    /// Applies an update: `set` first, then `removed` (as a `ci.updated` event does). The
    /// vector is rebuilt once, sized to the result, instead of shifting for each insertion.
    pub fn updated(&self, set: &AttributeMap, removed: &[String]) -> AttributeMap {
        let mut entries = Vec::with_capacity(self.entries.len() + set.len());
        let mut old = self.entries.iter().peekable();
        let mut new = set.entries.iter().peekable();
        loop {
            // A merge of two lists sorted by name; on the same name the update's value wins.
            let next = match (old.peek(), new.peek()) {
                (Some((a, _)), Some((b, _))) => match a.as_str().cmp(b.as_str()) {
                    std::cmp::Ordering::Less => old.next(),
                    std::cmp::Ordering::Equal => {
                        old.next();
                        new.next()
                    }
                    std::cmp::Ordering::Greater => new.next(),
                },
                (Some(_), None) => old.next(),
                (None, Some(_)) => new.next(),
                (None, None) => break,
            };
            if let Some((name, value)) = next
                && !removed.iter().any(|r| r == name.as_str())
            {
                entries.push((name.clone(), value.clone()));
            }
        }
        entries.shrink_to_fit();
        let map = AttributeMap { entries };
        debug_assert!(map.is_sorted_and_unique(), "an update keeps the names sorted and unique");
        map
    }

    fn is_sorted_and_unique(&self) -> bool {
        self.entries.windows(2).all(|pair| pair[0].0 < pair[1].0)
    }
}

impl From<BTreeMap<String, Value>> for AttributeMap {
    fn from(map: BTreeMap<String, Value>) -> AttributeMap {
        // A BTreeMap iterates in key order with unique keys: already the invariant.
        AttributeMap { entries: map.into_iter().map(|(name, value)| (Text::from(name), value)).collect() }
    }
}

impl From<&BTreeMap<String, Value>> for AttributeMap {
    fn from(map: &BTreeMap<String, Value>) -> AttributeMap {
        AttributeMap { entries: map.iter().map(|(name, value)| (Text::from(name.as_str()), value.clone())).collect() }
    }
}

impl FromIterator<(String, Value)> for AttributeMap {
    /// A later value for the same name wins, as in a `BTreeMap`.
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> AttributeMap {
        iter.into_iter().collect::<BTreeMap<_, _>>().into()
    }
}

impl<'a> IntoIterator for &'a AttributeMap {
    type Item = (&'a str, &'a Value);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (Text, Value)>, fn(&'a (Text, Value)) -> (&'a str, &'a Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(name, value)| (name.as_str(), value))
    }
}

impl std::ops::Index<&str> for AttributeMap {
    type Output = Value;

    /// The value of `name`; panics if it is not set (as `BTreeMap` does).
    fn index(&self, name: &str) -> &Value {
        self.get(name).unwrap_or_else(|| panic!("no attribute {name}"))
    }
}

impl Serialize for AttributeMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for AttributeMap {
    /// A JSON object; a name given twice keeps its last value, as a `BTreeMap` would.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = AttributeMap;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an object of attributes")
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut access: M) -> Result<AttributeMap, M::Error> {
                let mut entries: Vec<(Text, Value)> = Vec::with_capacity(access.size_hint().unwrap_or(0));
                while let Some(entry) = access.next_entry()? {
                    entries.push(entry);
                }
                let map = AttributeMap { entries };
                // What this crate writes is already in order: sorting is for other writers.
                Ok(if map.is_sorted_and_unique() {
                    map
                } else {
                    map.entries.into_iter().map(|(name, value)| (name.to_string(), value)).collect()
                })
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ci::tests::attrs;

    #[test]
    fn reads_like_the_btree_map_it_replaces() {
        let source = attrs(json!({"zone": "b", "cpu": 4, "disk": {"gib": 20}}));
        let map = AttributeMap::from(&source);
        assert_eq!((map.len(), map.is_empty()), (3, false));
        assert_eq!(map.get("cpu"), Some(&json!(4)));
        assert_eq!(map["disk"], json!({"gib": 20}));
        assert!(map.contains_key("zone") && !map.contains_key("Zone") && map.get("missing").is_none());
        assert_eq!(map.keys().collect::<Vec<_>>(), source.keys().collect::<Vec<_>>());
        assert_eq!(map.iter().collect::<Vec<_>>(), source.iter().map(|(n, v)| (n.as_str(), v)).collect::<Vec<_>>());
        assert_eq!(map.to_btree(), source);
        assert_eq!(serde_json::to_string(&map).ok(), serde_json::to_string(&source).ok(), "the same JSON text");
        let back: AttributeMap = serde_json::from_str(r#"{"b": 1, "a": 2, "b": 3}"#).expect("a map");
        assert_eq!(back.iter().collect::<Vec<_>>(), vec![("a", &json!(2)), ("b", &json!(3))]);
        assert!(serde_json::from_str::<AttributeMap>("[1]").is_err(), "not a map");
        assert_eq!(AttributeMap::from_iter([("x".to_string(), json!(1)), ("x".to_string(), json!(2))])["x"], json!(2));
    }

    /// A registration reads and writes its attributes as the `BTreeMap` it held before did
    /// (the stored JSON and its hash do not change), and the CI it makes holds them as they are.
    #[test]
    fn a_registration_keeps_its_json_and_hands_its_attributes_to_the_snapshot() {
        // Unsorted, with a name given twice, as another writer might send them.
        let attributes = r#"{"os":"debian-12","cpu_cores":64,"ip_addresses":["10.0.0.1"],"os":"alpine"}"#;
        let registration = |attributes: &str| {
            format!(
                r#"{{"ci_id":"019eac7c-7cb2-703a-bd64-d570fef35d8c","class":"host","name":"hv-1","status":"live","environment":null,"owner":null,"location":null,"version":null,"attributes":{attributes},"authorized_by":null}}"#
            )
        };
        let registered: crate::ci::CiRegistered =
            serde_json::from_str(&registration(attributes)).expect("a registration");
        let as_btree: BTreeMap<String, Value> = serde_json::from_str(attributes).expect("a map");
        assert_eq!(registered.attributes.to_btree(), as_btree, "sorted, the last of a repeated name kept");
        let written = serde_json::to_string(&registered).expect("JSON");
        let sorted = r#""attributes":{"cpu_cores":64,"ip_addresses":["10.0.0.1"],"os":"alpine"}"#;
        assert!(written.contains(sorted), "{written}");
        let snapshot = crate::ci::CiSnapshot::from_registered(&registered);
        assert_eq!(snapshot, crate::ci::CiSnapshot::from(registered.clone()));
        assert_eq!(*snapshot.attributes, registered.attributes);
        assert!(serde_json::from_str::<crate::ci::CiRegistered>(&registration("[1]")).is_err(), "not a map");
    }

    #[test]
    fn insert_and_remove_keep_the_names_sorted_and_unique() {
        let mut map = AttributeMap::new();
        for (name, value) in [("m", 1), ("a", 2), ("z", 3), ("m", 4)] {
            map.insert(name, json!(value));
        }
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "m", "z"]);
        assert_eq!(map["m"], json!(4));
        assert_eq!(map.remove("a"), Some(json!(2)));
        assert_eq!(map.remove("a"), None);
        assert!(map.is_sorted_and_unique());
    }

    /// Law: an update gives what the same sets and removals give on a `BTreeMap`.
    #[test]
    fn an_update_equals_the_btree_maps_inserts_then_removals() {
        let names = ["a", "b", "c", "d", "e", "f"];
        // Every subset of names as the start, the set and the removed, by bits of three counters.
        for start_bits in 0..64u32 {
            for set_bits in (0..64u32).step_by(5) {
                for removed_bits in (0..64u32).step_by(7) {
                    let pick = |bits: u32, offset: i64| -> BTreeMap<String, Value> {
                        names
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| bits & (1 << i) != 0)
                            .map(|(i, n)| (n.to_string(), json!(i as i64 + offset)))
                            .collect()
                    };
                    let (start, set) = (pick(start_bits, 0), pick(set_bits, 100));
                    let removed: Vec<String> = pick(removed_bits, 0).into_keys().collect();
                    let mut expected = start.clone();
                    expected.extend(set.clone());
                    for name in &removed {
                        expected.remove(name);
                    }
                    let got = AttributeMap::from(start).updated(&AttributeMap::from(&set), &removed);
                    assert_eq!(
                        got.to_btree(),
                        expected,
                        "start {start_bits:06b} set {set_bits:06b} removed {removed_bits:06b}"
                    );
                    assert!(got.is_sorted_and_unique());
                }
            }
        }
    }
}
