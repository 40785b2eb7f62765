//! Mapping, identification and authority rules (issue 17, part 2), per source:
//!
//! - *mapping*: which source type becomes which CI class (an exact type, else the `*` rule),
//!   which source fields make its name and version, which become which CI attributes, and which
//!   relationship kinds become which relationship types;
//! - *identification*: which fields identify an item, as alternatives tried in order (a
//!   Kubernetes object by its uid, else by namespace, kind and name);
//! - *authority*: which CI attributes the source owns. Only those can drift; every other
//!   attribute (an owner, a description typed in the CMDB) belongs to the CMDB.
//!
//! Rules are events (`discovery.rules_set` in `discovery-rules`, admin only), versioned like
//! approval policies; [`Rules::defaults`] is version 0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DiscoveryError, MAX_EXTERNAL_ID_BYTES, ObservedItem, ObservedRelationship, SourceKind, external_id};
use crate::ci::schema::attribute_spec;
use crate::model::{CiClass, RelType};

/// Most type rules per source.
pub const MAX_TYPE_RULES: usize = 256;
/// Most relationship rules per source.
pub const MAX_RELATIONSHIP_RULES: usize = 64;
/// Most mapped attributes per type rule.
pub const MAX_MAPPED_ATTRIBUTES: usize = 32;
/// Most identity alternatives per type rule, and fields per alternative.
pub const MAX_IDENTITY_FIELDS: usize = 8;
/// Longest name (source type, field, attribute), in bytes.
pub const MAX_RULE_NAME_BYTES: usize = 128;
/// Longest CI name an item gets, in bytes (longer names are cut at a character boundary).
pub const MAX_ITEM_NAME_BYTES: usize = 200;
/// Longest text value kept from a source, in bytes (longer values are dropped and counted).
pub const MAX_OBSERVED_TEXT_BYTES: usize = 4096;

/// How one source type becomes CIs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypeRule {
    /// The source's type (`aws_instance`, `Deployment`), or `*` for every other type.
    pub source_type: String,
    /// The CI class.
    pub class: CiClass,
    /// The fields whose values, joined by `/`, name the CI (the first present if several).
    pub name: Vec<String>,
    /// Alternatives of identifying fields: the first whose fields are all present identifies.
    pub identify: Vec<Vec<String>>,
    /// CI attribute to source field.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The field holding the version label, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// How one kind of source relationship becomes a relationship type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationshipRule {
    /// The source's kind (`depends_on`, `selects`, `cable`).
    pub kind: String,
    /// The relationship type.
    pub rel_type: RelType,
}

/// The rules of one source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceRules {
    /// Type rules.
    pub types: Vec<TypeRule>,
    /// Relationship rules; a kind without one is not recorded.
    pub relationships: Vec<RelationshipRule>,
    /// The CI attributes the source is authoritative for.
    pub authoritative: Vec<String>,
}

/// New rules for a source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RulesSet {
    /// The source.
    pub source: SourceKind,
    /// Its rules.
    pub rules: SourceRules,
    /// Why they changed.
    pub reason: String,
}

/// The rules of every source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    /// By source.
    pub sources: BTreeMap<SourceKind, SourceRules>,
}

/// An item as an importer read it, before mapping: its type, a reference relationships use
/// within the run, and its fields (flat, by name).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawItem {
    /// The source's type.
    pub source_type: String,
    /// The importer's reference to it within one file (relationships name it).
    pub local_ref: String,
    /// Its fields.
    pub fields: BTreeMap<String, Value>,
}

/// A relationship as an importer read it, between two items' local references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRelationship {
    /// The source's kind.
    pub kind: String,
    /// The item it goes from.
    pub from: String,
    /// The item it goes to.
    pub to: String,
}

/// Why an item was not mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unmapped {
    /// No rule for its type.
    NoRule,
    /// None of the identity alternatives had all its fields.
    NoIdentity,
}

/// The custom classes the default rules map to, with the built-in class each behaves like.
pub const DISCOVERED_CLASSES: &[(&str, CiClass, &str)] = &[
    ("cloud_resource", CiClass::Application, "A resource Terraform manages (discovered)"),
    ("k8s_namespace", CiClass::KubernetesCluster, "A Kubernetes namespace (discovered)"),
    ("k8s_node", CiClass::Host, "A Kubernetes node (discovered)"),
    ("k8s_ingress", CiClass::Application, "A Kubernetes ingress (discovered)"),
    ("software_component", CiClass::Application, "A component of a software bill of materials (discovered)"),
    ("rack", CiClass::PhysicalAsset, "An equipment rack (discovered)"),
    ("device", CiClass::NetworkDevice, "A network or data-centre device (discovered)"),
    ("interface", CiClass::NetworkDevice, "A device's network interface (discovered)"),
    ("netbox_vm", CiClass::VirtualMachine, "A virtual machine NetBox records (discovered)"),
    ("ip_address", CiClass::PhysicalAsset, "An IP address assignment (discovered)"),
];

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(a, f)| ((*a).to_owned(), (*f).to_owned())).collect()
}

fn class(name: &str) -> CiClass {
    CiClass::declared(name).expect("the default rules name valid classes")
}

fn type_rule(
    source_type: &str,
    class_name: &str,
    name: &[&str],
    identify: &[&[&str]],
    mapped: &[(&str, &str)],
) -> TypeRule {
    TypeRule {
        source_type: source_type.to_owned(),
        class: class(class_name),
        name: names(name),
        identify: identify.iter().map(|alt| names(alt)).collect(),
        attributes: attrs(mapped),
        version: None,
    }
}

fn rel(kind: &str, rel_type: RelType) -> RelationshipRule {
    RelationshipRule { kind: kind.to_owned(), rel_type }
}

impl SourceRules {
    /// The defaults of a source.
    #[allow(clippy::too_many_lines, reason = "one table: the default rules of the four sources")]
    pub fn defaults(source: SourceKind) -> SourceRules {
        match source {
            SourceKind::Terraform => SourceRules {
                types: vec![type_rule(
                    "*",
                    "cloud_resource",
                    &["address"],
                    &[&["address"]],
                    &[
                        ("resource_type", "type"),
                        ("provider", "provider"),
                        ("cloud_id", "id"),
                        ("arn", "arn"),
                        ("instance_type", "instance_type"),
                    ],
                )],
                relationships: vec![rel("depends_on", RelType::DependsOn)],
                authoritative: names(&["resource_type", "provider", "cloud_id", "arn", "instance_type"]),
            },
            SourceKind::Kubernetes => {
                let k8s_id: &[&[&str]] = &[&["uid"], &["namespace", "kind", "name"]];
                let workload = |kind: &str| {
                    type_rule(
                        kind,
                        "container",
                        &["namespace", "name"],
                        k8s_id,
                        &[("image", "image"), ("replicas", "replicas"), ("workload_kind", "kind")],
                    )
                };
                SourceRules {
                    types: vec![
                        type_rule(
                            "Service",
                            "application",
                            &["namespace", "name"],
                            k8s_id,
                            &[("service_type", "service_type")],
                        ),
                        workload("Deployment"),
                        workload("StatefulSet"),
                        type_rule(
                            "Pod",
                            "container",
                            &["namespace", "name"],
                            k8s_id,
                            &[("image", "image"), ("workload_kind", "kind"), ("node_name", "node_name")],
                        ),
                        type_rule("Namespace", "k8s_namespace", &["name"], &[&["uid"], &["kind", "name"]], &[]),
                        type_rule(
                            "Node",
                            "k8s_node",
                            &["name"],
                            &[&["uid"], &["kind", "name"]],
                            &[("kubelet_version", "kubelet_version"), ("os_image", "os_image")],
                        ),
                        type_rule("Ingress", "k8s_ingress", &["namespace", "name"], k8s_id, &[]),
                    ],
                    relationships: vec![
                        rel("selects", RelType::RunsOn),
                        rel("in_namespace", RelType::PartOf),
                        rel("scheduled_on", RelType::RunsOn),
                        rel("routes_to", RelType::DependsOn),
                    ],
                    authoritative: names(&[
                        "image",
                        "replicas",
                        "service_type",
                        "workload_kind",
                        "node_name",
                        "kubelet_version",
                        "os_image",
                    ]),
                }
            }
            SourceKind::Cyclonedx => SourceRules {
                types: vec![
                    type_rule(
                        "service",
                        "application",
                        &["name"],
                        &[&["bom_ref"], &["name"]],
                        &[("service_endpoints", "endpoints")],
                    ),
                    TypeRule {
                        version: Some("version".into()),
                        ..type_rule(
                            "*",
                            "software_component",
                            &["display"],
                            &[&["purl"], &["bom_ref"], &["display"]],
                            &[("purl", "purl"), ("component_type", "type"), ("licenses", "licenses")],
                        )
                    },
                ],
                relationships: vec![rel("depends_on", RelType::DependsOn)],
                authoritative: names(&["purl", "component_type", "licenses", "service_endpoints"]),
            },
            SourceKind::Netbox => {
                let by_pk: &[&[&str]] = &[&["model", "pk"]];
                SourceRules {
                    types: vec![
                        type_rule(
                            "dcim.site",
                            "location",
                            &["name"],
                            by_pk,
                            &[("site_code", "slug"), ("address", "physical_address")],
                        ),
                        type_rule(
                            "dcim.rack",
                            "rack",
                            &["display"],
                            by_pk,
                            &[("asset_tag", "asset_tag"), ("status", "status")],
                        ),
                        type_rule(
                            "dcim.device",
                            "device",
                            &["display"],
                            by_pk,
                            &[("status", "status"), ("serial_number", "serial"), ("device_role", "role")],
                        ),
                        type_rule(
                            "dcim.interface",
                            "interface",
                            &["display"],
                            by_pk,
                            &[("interface_type", "type"), ("enabled", "enabled"), ("mac_address", "mac_address")],
                        ),
                        type_rule(
                            "virtualization.virtualmachine",
                            "netbox_vm",
                            &["display"],
                            by_pk,
                            &[("status", "status"), ("vcpus", "vcpus"), ("memory_mb", "memory"), ("disk_gb", "disk")],
                        ),
                        type_rule(
                            "ipam.ipaddress",
                            "ip_address",
                            &["display"],
                            by_pk,
                            &[("address", "address"), ("status", "status"), ("dns_name", "dns_name")],
                        ),
                        type_rule("tenancy.tenant", "team", &["name"], by_pk, &[]),
                    ],
                    relationships: vec![
                        rel("in_site", RelType::PartOf),
                        rel("in_rack", RelType::PartOf),
                        rel("on_device", RelType::PartOf),
                        rel("cable", RelType::ConnectsTo),
                        rel("assigned_to", RelType::PartOf),
                    ],
                    authoritative: names(&[
                        "status",
                        "serial_number",
                        "device_role",
                        "interface_type",
                        "enabled",
                        "mac_address",
                        "vcpus",
                        "memory_mb",
                        "disk_gb",
                        "address",
                        "dns_name",
                        "asset_tag",
                        "site_code",
                    ]),
                }
            }
        }
    }

    /// Checks the rules are usable: names bounded, an identity for every type, no type twice.
    pub fn check(&self) -> Result<(), DiscoveryError> {
        let bad = |field: &str, detail: String| DiscoveryError::Invalid { field: field.to_owned(), detail };
        if self.types.is_empty() || self.types.len() > MAX_TYPE_RULES {
            return Err(bad("types", format!("1 to {MAX_TYPE_RULES} type rules (max_type_rules)")));
        }
        if self.relationships.len() > MAX_RELATIONSHIP_RULES {
            return Err(bad("relationships", format!("at most {MAX_RELATIONSHIP_RULES} (max_relationship_rules)")));
        }
        let name_ok =
            |s: &str| !s.trim().is_empty() && s.len() <= MAX_RULE_NAME_BYTES && !s.chars().any(char::is_control);
        let mut seen = std::collections::BTreeSet::new();
        for (i, rule) in self.types.iter().enumerate() {
            let at = |what: &str| format!("types[{i}].{what}");
            if !name_ok(&rule.source_type) {
                return Err(bad(&at("source_type"), format!("1 to {MAX_RULE_NAME_BYTES} bytes of text")));
            }
            if !seen.insert(rule.source_type.as_str()) {
                return Err(bad(&at("source_type"), format!("{} has two rules", rule.source_type)));
            }
            if rule.name.is_empty() || !rule.name.iter().all(|n| name_ok(n)) {
                return Err(bad(&at("name"), "at least one field name".into()));
            }
            let alternatives_ok = !rule.identify.is_empty()
                && rule.identify.len() <= MAX_IDENTITY_FIELDS
                && rule
                    .identify
                    .iter()
                    .all(|alt| !alt.is_empty() && alt.len() <= MAX_IDENTITY_FIELDS && alt.iter().all(|f| name_ok(f)));
            if !alternatives_ok {
                return Err(bad(
                    &at("identify"),
                    format!("1 to {MAX_IDENTITY_FIELDS} alternatives of 1 to {MAX_IDENTITY_FIELDS} field names"),
                ));
            }
            if rule.attributes.len() > MAX_MAPPED_ATTRIBUTES {
                return Err(bad(&at("attributes"), format!("at most {MAX_MAPPED_ATTRIBUTES} (max_mapped_attributes)")));
            }
            for (attribute, field) in &rule.attributes {
                let attribute_ok = !attribute.is_empty()
                    && attribute.len() <= crate::ci::schema::registry::MAX_ATTRIBUTE_NAME_BYTES
                    && attribute.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    && attribute != "external_id";
                if !attribute_ok || !name_ok(field) {
                    return Err(bad(
                        &at("attributes"),
                        format!(
                            "{attribute:?} is not an attribute name (lower-case letters, digits, _; not external_id)"
                        ),
                    ));
                }
            }
        }
        for (i, rule) in self.relationships.iter().enumerate() {
            if !name_ok(&rule.kind) {
                return Err(bad(
                    &format!("relationships[{i}].kind"),
                    format!("1 to {MAX_RULE_NAME_BYTES} bytes of text"),
                ));
            }
        }
        Ok(())
    }

    /// The rule of a source type: its own, else `*`.
    pub fn rule_for(&self, source_type: &str) -> Option<&TypeRule> {
        self.types
            .iter()
            .find(|r| r.source_type == source_type)
            .or_else(|| self.types.iter().find(|r| r.source_type == "*"))
    }

    /// The relationship type of a kind.
    pub fn rel_type_for(&self, kind: &str) -> Option<RelType> {
        self.relationships.iter().find(|r| r.kind == kind).map(|r| r.rel_type)
    }

    /// Whether the source owns a CI attribute.
    pub fn owns(&self, attribute: &str) -> bool {
        self.authoritative.iter().any(|a| a == attribute)
    }

    /// Maps one raw item: its identity, class, name, version and attributes. `dropped` counts
    /// values left out for being longer than [`MAX_OBSERVED_TEXT_BYTES`].
    pub fn map(
        &self,
        source: SourceKind,
        scope: &str,
        raw: &RawItem,
        dropped: &mut u64,
    ) -> Result<ObservedItem, Unmapped> {
        let rule = self.rule_for(&raw.source_type).ok_or(Unmapped::NoRule)?;
        let identity = rule
            .identify
            .iter()
            .find_map(|alt| alt.iter().map(|f| field_text(&raw.fields, f)).collect::<Option<Vec<String>>>())
            .ok_or(Unmapped::NoIdentity)?;
        let refs: Vec<&str> = identity.iter().map(String::as_str).collect();
        let id = external_id(source, scope, &refs);
        if id.len() > MAX_EXTERNAL_ID_BYTES {
            return Err(Unmapped::NoIdentity);
        }
        let name_parts: Vec<String> = rule.name.iter().filter_map(|f| field_text(&raw.fields, f)).collect();
        let name = if name_parts.is_empty() { identity.join("/") } else { name_parts.join("/") };
        let mut attributes = BTreeMap::new();
        for (attribute, field) in &rule.attributes {
            let Some(value) = raw.fields.get(field).filter(|v| !is_empty(v)) else { continue };
            let value = if attribute_spec(rule.class, attribute).is_some() { value.clone() } else { as_text(value) };
            if value.as_str().is_some_and(|s| s.len() > MAX_OBSERVED_TEXT_BYTES) {
                *dropped += 1;
                continue;
            }
            attributes.insert(attribute.clone(), value);
        }
        let version = rule.version.as_ref().and_then(|f| field_text(&raw.fields, f));
        Ok(ObservedItem {
            external_id: id,
            source_type: raw.source_type.clone(),
            class: rule.class,
            name: cut(&name, MAX_ITEM_NAME_BYTES),
            version: version.map(|v| cut(&v, crate::ci::MAX_VERSION_BYTES)),
            attributes,
        })
    }

    /// Maps a relationship between two mapped items; `None` when no rule names its kind.
    pub fn map_relationship(&self, raw: &RawRelationship, from: &str, to: &str) -> Option<ObservedRelationship> {
        let rel_type = self.rel_type_for(&raw.kind)?;
        (from != to).then(|| ObservedRelationship {
            kind: raw.kind.clone(),
            rel_type,
            from: from.to_owned(),
            to: to.to_owned(),
        })
    }
}

impl Rules {
    /// Version 0: the defaults of every source.
    pub fn defaults() -> Rules {
        Rules { sources: SourceKind::ALL.iter().map(|s| (*s, SourceRules::defaults(*s))).collect() }
    }

    /// Applies a new version.
    pub fn set(&mut self, set: RulesSet) {
        self.sources.insert(set.source, set.rules);
    }

    /// The rules of a source.
    pub fn of(&self, source: SourceKind) -> SourceRules {
        self.sources.get(&source).cloned().unwrap_or_else(|| SourceRules::defaults(source))
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A field as identifying or naming text: strings as they are, numbers and booleans written.
fn field_text(fields: &BTreeMap<String, Value>, field: &str) -> Option<String> {
    match fields.get(field)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A value as the text attribute of a discovered class holds it.
fn as_text(value: &Value) -> Value {
    match value {
        Value::String(_) => value.clone(),
        Value::Array(items) => Value::String(
            items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        other => Value::String(other.to_string()),
    }
}

fn cut(text: &str, max_bytes: usize) -> String {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
