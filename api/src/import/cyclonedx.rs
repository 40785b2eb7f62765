//! CycloneDX JSON SBOMs (spec 1.2 to 1.6: the JSON format exists since 1.2, and the fields read
//! here mean the same in every version since). Components (nested ones too, and the BOM's own
//! `metadata.component`) and services (nested too) become items; `dependencies` become
//! `depends_on` relationships between `bom-ref`s. A component is identified by its package URL
//! where it has one. The product the BOM describes (`metadata.component`'s name, else the serial
//! number) is the run's scope, and `metadata.timestamp` the
//! time it observed.
//!
//! The top-level arrays are streamed: one top-level component (with its nested ones) is held
//! at a time.

use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;

use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{Carried, FileFacts, ImportError, RawItem, RawRelationship, Sink, put_text};

/// The spec versions read.
pub const SUPPORTED_SPEC_VERSIONS: &[&str] = &["1.2", "1.3", "1.4", "1.5", "1.6"];
/// How deep components may nest.
pub const MAX_NESTING_DEPTH: usize = 32;

/// Reads a BOM.
pub fn read(input: impl BufRead, sink: &mut dyn Sink) -> Result<FileFacts, ImportError> {
    let mut carried = Carried(None);
    let mut header = Header::default();
    let mut deserializer = serde_json::Deserializer::from_reader(input);
    let visitor = BomVisitor { sink, carried: &mut carried, header: &mut header };
    if let Err(error) = serde::Deserializer::deserialize_map(&mut deserializer, visitor) {
        return Err(carried.or("CycloneDX JSON", &error));
    }
    deserializer.end().map_err(|e| super::json_error("CycloneDX JSON", &e))?;
    if header.format.as_deref() != Some("CycloneDX") {
        return Err(ImportError::Invalid("the file is not a CycloneDX BOM: \"bomFormat\" is not \"CycloneDX\"".into()));
    }
    match header.spec_version.as_deref() {
        Some(v) if SUPPORTED_SPEC_VERSIONS.contains(&v) => {}
        Some(v) => {
            return Err(ImportError::Unsupported(format!(
                "CycloneDX spec version {v} is not supported; the versions read are {}",
                SUPPORTED_SPEC_VERSIONS.join(", ")
            )));
        }
        None => return Err(ImportError::Invalid("the BOM has no \"specVersion\"".into())),
    }
    let observed_at = header
        .timestamp
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| cmdb_core::Timestamp::from_micros(t.timestamp_micros()));
    // The product the BOM describes is what stays the same between two BOMs of it (a new
    // serial number comes with every generation); the serial number only when it names none.
    let scope = header.product.map(|p| p.replace('/', "-")).or(header.serial);
    Ok(FileFacts { scope, observed_at })
}

#[derive(Default)]
struct Header {
    format: Option<String>,
    spec_version: Option<String>,
    serial: Option<String>,
    timestamp: Option<String>,
    product: Option<String>,
}

struct BomVisitor<'a> {
    sink: &'a mut dyn Sink,
    carried: &'a mut Carried,
    header: &'a mut Header,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    component: Option<Component>,
}

impl<'de> Visitor<'de> for BomVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CycloneDX BOM object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let emitted = match key.as_str() {
                "bomFormat" => {
                    self.header.format = map.next_value()?;
                    Ok(())
                }
                "specVersion" => {
                    self.header.spec_version = map.next_value()?;
                    Ok(())
                }
                "serialNumber" => {
                    self.header.serial = map.next_value()?;
                    Ok(())
                }
                "metadata" => {
                    let metadata: Metadata = map.next_value()?;
                    self.header.timestamp = metadata.timestamp;
                    self.header.product = metadata.component.as_ref().map(|c| c.name.clone());
                    match &metadata.component {
                        Some(component) => emit_component(component, 0, self.sink),
                        None => Ok(()),
                    }
                }
                "components" | "services" | "dependencies" => {
                    let kind = match key.as_str() {
                        "components" => ListKind::Components,
                        "services" => ListKind::Services,
                        _ => ListKind::Dependencies,
                    };
                    map.next_value_seed(List { kind, sink: &mut *self.sink, carried: &mut *self.carried })?;
                    Ok(())
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    Ok(())
                }
            };
            if let Err(error) = emitted {
                return Err(self.carried.stop(error));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum ListKind {
    Components,
    Services,
    Dependencies,
}

struct List<'a> {
    kind: ListKind,
    sink: &'a mut dyn Sink,
    carried: &'a mut Carried,
}

impl<'de> DeserializeSeed<'de> for List<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for List<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let emitted = match self.kind {
                ListKind::Components => match seq.next_element::<Component>()? {
                    Some(component) => emit_component(&component, 0, self.sink),
                    None => return Ok(()),
                },
                ListKind::Services => match seq.next_element::<Service>()? {
                    Some(service) => emit_service(&service, None, 0, self.sink),
                    None => return Ok(()),
                },
                ListKind::Dependencies => match seq.next_element::<Dependency>()? {
                    Some(dependency) => emit_dependency(&dependency, self.sink),
                    None => return Ok(()),
                },
            };
            if let Err(error) = emitted {
                return Err(self.carried.stop(error));
            }
        }
    }
}

#[derive(Deserialize)]
struct Component {
    #[serde(rename = "type", default)]
    component_type: Option<String>,
    #[serde(rename = "bom-ref", default)]
    bom_ref: Option<String>,
    #[serde(default)]
    group: Option<String>,
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    purl: Option<String>,
    #[serde(default)]
    licenses: Vec<Value>,
    #[serde(default)]
    components: Vec<Component>,
}

#[derive(Deserialize)]
struct Service {
    #[serde(rename = "bom-ref", default)]
    bom_ref: Option<String>,
    #[serde(default)]
    group: Option<String>,
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    services: Vec<Service>,
}

#[derive(Deserialize)]
struct Dependency {
    #[serde(rename = "ref")]
    reference: String,
    #[serde(rename = "dependsOn", default)]
    depends_on: Vec<String>,
}

fn too_deep(depth: usize) -> Result<(), ImportError> {
    if depth > MAX_NESTING_DEPTH {
        return Err(ImportError::Invalid(format!(
            "components nest deeper than {MAX_NESTING_DEPTH} (max_nesting_depth)"
        )));
    }
    Ok(())
}

/// A license entry as text: its SPDX id, its name, or an expression.
fn license_text(entry: &Value) -> Option<String> {
    let license = entry.get("license");
    license
        .and_then(|l| l.get("id").or_else(|| l.get("name")))
        .or_else(|| entry.get("expression"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn emit_component(component: &Component, depth: usize, sink: &mut dyn Sink) -> Result<(), ImportError> {
    too_deep(depth)?;
    let display = match (&component.group, &component.version) {
        (Some(group), Some(version)) if !group.is_empty() => format!("{group}/{}@{version}", component.name),
        (_, Some(version)) => format!("{}@{version}", component.name),
        (Some(group), None) if !group.is_empty() => format!("{group}/{}", component.name),
        _ => component.name.clone(),
    };
    let mut fields = BTreeMap::new();
    put_text(&mut fields, "type", Some(component.component_type.as_deref().unwrap_or("library")));
    put_text(&mut fields, "name", Some(&component.name));
    put_text(&mut fields, "group", component.group.as_deref());
    put_text(&mut fields, "version", component.version.as_deref());
    put_text(&mut fields, "purl", component.purl.as_deref());
    put_text(&mut fields, "bom_ref", component.bom_ref.as_deref());
    put_text(&mut fields, "display", Some(&display));
    let licenses: Vec<Value> = component.licenses.iter().filter_map(license_text).map(Value::String).collect();
    if !licenses.is_empty() {
        fields.insert("licenses".into(), Value::Array(licenses));
    }
    let local_ref = component.bom_ref.clone().or_else(|| component.purl.clone()).unwrap_or(display);
    sink.item(RawItem {
        source_type: component.component_type.clone().unwrap_or_else(|| "library".into()),
        local_ref,
        fields,
    })?;
    for nested in &component.components {
        emit_component(nested, depth + 1, sink)?;
    }
    Ok(())
}

fn emit_service(service: &Service, parent: Option<&str>, depth: usize, sink: &mut dyn Sink) -> Result<(), ImportError> {
    too_deep(depth)?;
    let local_ref = service.bom_ref.clone().unwrap_or_else(|| service.name.clone());
    let mut fields = BTreeMap::new();
    put_text(&mut fields, "name", Some(&service.name));
    put_text(&mut fields, "group", service.group.as_deref());
    put_text(&mut fields, "version", service.version.as_deref());
    put_text(&mut fields, "bom_ref", service.bom_ref.as_deref());
    if !service.endpoints.is_empty() {
        fields.insert("endpoints".into(), Value::Array(service.endpoints.iter().cloned().map(Value::String).collect()));
    }
    if let Some(parent) = parent {
        // A nested service is part of what its parent offers: the parent needs it.
        sink.relationship(RawRelationship {
            kind: "depends_on".into(),
            from: parent.to_owned(),
            to: local_ref.clone(),
        })?;
    }
    sink.item(RawItem { source_type: "service".into(), local_ref: local_ref.clone(), fields })?;
    for nested in &service.services {
        emit_service(nested, Some(&local_ref), depth + 1, sink)?;
    }
    Ok(())
}

fn emit_dependency(dependency: &Dependency, sink: &mut dyn Sink) -> Result<(), ImportError> {
    for target in &dependency.depends_on {
        sink.relationship(RawRelationship {
            kind: "depends_on".into(),
            from: dependency.reference.clone(),
            to: target.clone(),
        })?;
    }
    Ok(())
}
