//! A NetBox export: the JSON array Django's `dumpdata` writes (`{"model", "pk", "fields"}`
//! objects), read one object at a time. Sites, racks, devices, interfaces, virtual machines,
//! IP addresses and tenants become items, identified by model and primary key. Relationships:
//! `in_site` (a rack or device to its site), `in_rack` (a device to its rack), `on_device`
//! (an interface to its device), `cable` (the A end's interface to the B end's, from the
//! interfaces' `cable` and `cable_end`), `assigned_to` (an IP address to its interface).
//! Other models are skipped.
//!
//! Cables are paired after the read from references kept per cable (two small strings each).

use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;

use serde::Deserialize;
use serde::de::{SeqAccess, Visitor};
use serde_json::Value;

use super::{Carried, FileFacts, ImportError, RawItem, RawRelationship, Sink, put_text};

/// Most cables kept for pairing their ends.
pub const MAX_CABLES: usize = 1_000_000;

/// The models read, with the fields each keeps.
const MODELS: &[(&str, &[&str])] = &[
    ("dcim.site", &["name", "slug", "status", "physical_address", "facility"]),
    ("dcim.rack", &["name", "status", "asset_tag", "serial", "u_height"]),
    ("dcim.device", &["name", "status", "serial", "asset_tag", "role", "device_role", "device_type"]),
    ("dcim.interface", &["name", "type", "enabled", "mac_address", "mtu"]),
    ("virtualization.virtualmachine", &["name", "status", "vcpus", "memory", "disk"]),
    ("ipam.ipaddress", &["address", "status", "dns_name"]),
    ("tenancy.tenant", &["name", "slug"]),
];

/// Reads an export.
pub fn read(input: impl BufRead, sink: &mut dyn Sink) -> Result<FileFacts, ImportError> {
    let mut carried = Carried(None);
    let mut cables = Cables::default();
    let mut deserializer = serde_json::Deserializer::from_reader(input);
    let visitor = DumpVisitor { sink: &mut *sink, carried: &mut carried, cables: &mut cables };
    if let Err(error) = serde::Deserializer::deserialize_seq(&mut deserializer, visitor) {
        return Err(carried.or("NetBox export JSON", &error));
    }
    deserializer.end().map_err(|e| super::json_error("NetBox export JSON", &e))?;
    if cables.objects == 0 {
        return Err(ImportError::Invalid(
            "the file holds no NetBox objects (a list of {\"model\", \"pk\", \"fields\"})".into(),
        ));
    }
    for ends in cables.ends.values() {
        if let (Some(a), Some(b)) = (&ends.0, &ends.1) {
            sink.relationship(RawRelationship { kind: "cable".into(), from: a.clone(), to: b.clone() })?;
        }
    }
    Ok(FileFacts::default())
}

#[derive(Default)]
struct Cables {
    objects: u64,
    /// Cable id to its A and B ends (interface references).
    ends: BTreeMap<i64, (Option<String>, Option<String>)>,
}

#[derive(Deserialize)]
struct Object {
    model: String,
    #[serde(default)]
    pk: Option<Value>,
    #[serde(default)]
    fields: serde_json::Map<String, Value>,
}

struct DumpVisitor<'a> {
    sink: &'a mut dyn Sink,
    carried: &'a mut Carried,
    cables: &'a mut Cables,
}

impl<'de> Visitor<'de> for DumpVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a NetBox export: a list of {\"model\", \"pk\", \"fields\"}")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(object) = seq.next_element::<Object>()? {
            self.cables.objects += 1;
            if let Err(error) = emit(&object, self.sink, self.cables) {
                return Err(self.carried.stop(error));
            }
        }
        Ok(())
    }
}

fn local_ref(model: &str, pk: &Value) -> String {
    format!("{model}#{pk}")
}

fn reference(fields: &serde_json::Map<String, Value>, field: &str, model: &str) -> Option<String> {
    fields.get(field).filter(|v| v.is_number() || v.is_string()).map(|pk| local_ref(model, pk))
}

fn emit(object: &Object, sink: &mut dyn Sink, cables: &mut Cables) -> Result<(), ImportError> {
    let Some((model, kept)) = MODELS.iter().find(|(m, _)| *m == object.model) else { return Ok(()) };
    let Some(pk) = object.pk.as_ref().filter(|pk| pk.is_number() || pk.is_string()) else {
        return Err(ImportError::Invalid(format!("a {model} object has no primary key")));
    };
    let me = local_ref(model, pk);
    let fields = &object.fields;
    let mut item_fields = BTreeMap::new();
    item_fields.insert("model".to_owned(), Value::String((*model).to_owned()));
    item_fields.insert("pk".to_owned(), pk.clone());
    for field in *kept {
        if let Some(value) = fields.get(*field).filter(|v| !v.is_null()) {
            item_fields.insert((*field).to_owned(), value.clone());
        }
    }
    // A device's role is `role` from NetBox 3.6, `device_role` before.
    if let Some(role) = item_fields.remove("device_role") {
        item_fields.entry("role".to_owned()).or_insert(role);
    }
    let name = fields.get("name").and_then(Value::as_str).filter(|n| !n.is_empty());
    let label = name.or_else(|| fields.get("address").and_then(Value::as_str)).unwrap_or(model);
    put_text(&mut item_fields, "display", Some(&format!("{label} #{pk}")));
    let mut relate = |kind: &str, to: Option<String>| -> Result<(), ImportError> {
        match to {
            Some(to) => sink.relationship(RawRelationship { kind: kind.into(), from: me.clone(), to }),
            None => Ok(()),
        }
    };
    match *model {
        "dcim.rack" => relate("in_site", reference(fields, "site", "dcim.site"))?,
        "dcim.device" => {
            relate("in_site", reference(fields, "site", "dcim.site"))?;
            relate("in_rack", reference(fields, "rack", "dcim.rack"))?;
        }
        "dcim.interface" => {
            relate("on_device", reference(fields, "device", "dcim.device"))?;
            if let Some(cable) = fields.get("cable").and_then(Value::as_i64) {
                if cables.ends.len() >= MAX_CABLES && !cables.ends.contains_key(&cable) {
                    return Err(ImportError::Invalid(format!("more than {MAX_CABLES} cables (max_cables)")));
                }
                let ends = cables.ends.entry(cable).or_default();
                match fields.get("cable_end").and_then(Value::as_str) {
                    Some("B") => ends.1 = Some(me.clone()),
                    _ => ends.0 = Some(me.clone()),
                }
            }
        }
        "ipam.ipaddress" => {
            let assigned = fields
                .get("assigned_object_type")
                .and_then(Value::as_array)
                .map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("."));
            if assigned.as_deref() == Some("dcim.interface") {
                relate("assigned_to", reference(fields, "assigned_object_id", "dcim.interface"))?;
            }
        }
        _ => {}
    }
    sink.item(RawItem { source_type: (*model).to_owned(), local_ref: me, fields: item_fields })
}
