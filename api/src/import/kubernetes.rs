//! Kubernetes objects: multi-document YAML manifests, or JSON (`kubectl get -o json`: a `List`
//! whose `items` are read one at a time, or one object). Deployments, StatefulSets, Services,
//! Namespaces, Nodes, Pods and Ingresses become items; other kinds (ServiceAccounts,
//! ConfigMaps) are passed on too and left unmapped by the rules. Relationships:
//!
//! - `selects`: a Service to each Deployment or StatefulSet of its namespace whose pod
//!   template's labels include the Service's selector (the Service runs on those workloads);
//! - `in_namespace`: a namespaced object to its Namespace (when the Namespace is observed);
//! - `scheduled_on`: a Pod to its Node;
//! - `routes_to`: an Ingress to the Services its rules send traffic to.
//!
//! YAML documents are split at `---` lines and parsed one at a time.

use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{Carried, FileFacts, ImportError, RawItem, RawRelationship, Sink, put_text};

/// Longest YAML document read, in bytes (a manifest larger than this is not a manifest).
pub const MAX_YAML_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;
/// Most Services and workloads kept for matching selectors (a bound on the pairing loop).
pub const MAX_SELECTOR_OBJECTS: usize = 200_000;

/// Reads manifests or a JSON list.
pub fn read(mut input: impl BufRead, sink: &mut dyn Sink) -> Result<FileFacts, ImportError> {
    let mut state = Objects::default();
    let first = loop {
        let buffer = input.fill_buf()?;
        match buffer.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => break Some(buffer[i]),
            None if buffer.is_empty() => break None,
            None => {
                let n = buffer.len();
                input.consume(n);
            }
        }
    };
    match first {
        None => return Err(ImportError::Invalid("the file is empty: no Kubernetes objects".into())),
        Some(b'{') => read_json(input, sink, &mut state)?,
        Some(_) => read_yaml(input, sink, &mut state)?,
    }
    state.relate(sink)?;
    if state.objects == 0 {
        return Err(ImportError::Invalid("the file holds no Kubernetes objects (nothing with a kind)".into()));
    }
    Ok(FileFacts::default())
}

fn read_yaml(input: impl BufRead, sink: &mut dyn Sink, state: &mut Objects) -> Result<(), ImportError> {
    let mut document = String::new();
    let mut number = 0usize;
    for line in input.lines() {
        let line = line?;
        if line.trim_end() == "---" || line.starts_with("--- ") {
            number += 1;
            yaml_document(&document, number, sink, state)?;
            document.clear();
            continue;
        }
        document.push_str(&line);
        document.push('\n');
        if document.len() > MAX_YAML_DOCUMENT_BYTES {
            return Err(ImportError::Invalid(format!(
                "YAML document {} is larger than {MAX_YAML_DOCUMENT_BYTES} bytes (max_yaml_document_bytes)",
                number + 1
            )));
        }
    }
    yaml_document(&document, number + 1, sink, state)
}

fn yaml_document(text: &str, number: usize, sink: &mut dyn Sink, state: &mut Objects) -> Result<(), ImportError> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text)
        .map_err(|e| ImportError::Syntax { format: "YAML", detail: format!("document {number}: {e}") })?;
    for doc in docs {
        let value = yaml_to_json(&doc);
        if value.is_null() {
            continue; // a document of comments only
        }
        state.object(&value, sink)?;
    }
    Ok(())
}

fn yaml_to_json(yaml: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match yaml {
        Yaml::Real(text) => {
            text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
        }
        Yaml::Integer(n) => Value::from(*n),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .filter_map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(n) => n.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((key, yaml_to_json(v)))
                })
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

fn read_json(input: impl BufRead, sink: &mut dyn Sink, state: &mut Objects) -> Result<(), ImportError> {
    let mut carried = Carried(None);
    let mut deserializer = serde_json::Deserializer::from_reader(input);
    let visitor = TopVisitor { sink, state: &mut *state, carried: &mut carried };
    if let Err(error) = serde::Deserializer::deserialize_map(&mut deserializer, visitor) {
        return Err(carried.or("Kubernetes JSON", &error));
    }
    deserializer.end().map_err(|e| super::json_error("Kubernetes JSON", &e))
}

/// The top-level object: a `List` (its `items` streamed) or one object (held whole).
struct TopVisitor<'a> {
    sink: &'a mut dyn Sink,
    state: &'a mut Objects,
    carried: &'a mut Carried,
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object or List")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut single = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                map.next_value_seed(Items {
                    sink: &mut *self.sink,
                    state: &mut *self.state,
                    carried: &mut *self.carried,
                })?;
            } else if matches!(key.as_str(), "kind" | "apiVersion" | "metadata" | "spec" | "status") {
                single.insert(key, map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        let is_list = single.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"));
        if !is_list && let Err(error) = self.state.object(&Value::Object(single), self.sink) {
            return Err(self.carried.stop(error));
        }
        Ok(())
    }
}

struct Items<'a> {
    sink: &'a mut dyn Sink,
    state: &'a mut Objects,
    carried: &'a mut Carried,
}

impl<'de> DeserializeSeed<'de> for Items<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Items<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of Kubernetes objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(object) = seq.next_element::<Value>()? {
            if let Err(error) = self.state.object(&object, self.sink) {
                return Err(self.carried.stop(error));
            }
        }
        Ok(())
    }
}

/// Labels, or a selector.
type Labels = BTreeMap<String, String>;

/// What relationships need of the objects read so far: references and labels only.
#[derive(Default)]
struct Objects {
    objects: u64,
    /// (namespace, selector, local ref) of Services.
    services: Vec<(String, BTreeMap<String, String>, String)>,
    /// (namespace, pod template labels, local ref) of Deployments and StatefulSets.
    workloads: Vec<(String, BTreeMap<String, String>, String)>,
}

fn local_ref(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, key| v.get(key)).and_then(Value::as_str)
}

fn labels(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
        .unwrap_or_default()
}

const NAMESPACED: &[&str] = &["Deployment", "StatefulSet", "Service", "Pod", "Ingress"];

impl Objects {
    fn object(&mut self, object: &Value, sink: &mut dyn Sink) -> Result<(), ImportError> {
        let Some(kind) = text(object, &["kind"]) else {
            return Err(ImportError::Invalid(format!("an object has no kind: {}", preview(object))));
        };
        let Some(name) = text(object, &["metadata", "name"]) else {
            return Err(ImportError::Invalid(format!("a {kind} has no metadata.name")));
        };
        self.objects += 1;
        let namespaced = NAMESPACED.contains(&kind);
        let namespace = if namespaced { text(object, &["metadata", "namespace"]).unwrap_or("default") } else { "" };
        let me = local_ref(kind, namespace, name);
        let mut fields = BTreeMap::new();
        put_text(&mut fields, "kind", Some(kind));
        put_text(&mut fields, "name", Some(name));
        put_text(&mut fields, "uid", text(object, &["metadata", "uid"]));
        if namespaced {
            put_text(&mut fields, "namespace", Some(namespace));
            sink.relationship(RawRelationship {
                kind: "in_namespace".into(),
                from: me.clone(),
                to: local_ref("Namespace", "", namespace),
            })?;
        }
        let spec = object.get("spec");
        match kind {
            "Deployment" | "StatefulSet" => {
                let template = spec.and_then(|s| s.get("template"));
                let image = template.and_then(|t| first_image(t.get("spec")));
                put_text(&mut fields, "image", image);
                let replicas = spec.and_then(|s| s.get("replicas")).and_then(Value::as_u64).unwrap_or(1);
                fields.insert("replicas".into(), Value::from(replicas));
                let pod_labels = labels(template.and_then(|t| t.get("metadata")).and_then(|m| m.get("labels")));
                self.keep_workload(namespace, pod_labels, me.clone())?;
            }
            "Pod" => {
                put_text(&mut fields, "image", first_image(spec));
                if let Some(node) = spec.and_then(|s| text(s, &["nodeName"])) {
                    put_text(&mut fields, "node_name", Some(node));
                    sink.relationship(RawRelationship {
                        kind: "scheduled_on".into(),
                        from: me.clone(),
                        to: local_ref("Node", "", node),
                    })?;
                }
            }
            "Service" => {
                put_text(
                    &mut fields,
                    "service_type",
                    Some(spec.and_then(|s| text(s, &["type"])).unwrap_or("ClusterIP")),
                );
                let selector = labels(spec.and_then(|s| s.get("selector")));
                if !selector.is_empty() {
                    if self.services.len() >= MAX_SELECTOR_OBJECTS {
                        return Err(ImportError::Invalid(format!(
                            "more than {MAX_SELECTOR_OBJECTS} Services (max_selector_objects)"
                        )));
                    }
                    self.services.push((namespace.to_owned(), selector, me.clone()));
                }
            }
            "Node" => {
                put_text(&mut fields, "kubelet_version", text(object, &["status", "nodeInfo", "kubeletVersion"]));
                put_text(&mut fields, "os_image", text(object, &["status", "nodeInfo", "osImage"]));
            }
            "Ingress" => {
                for backend in ingress_backends(spec) {
                    sink.relationship(RawRelationship {
                        kind: "routes_to".into(),
                        from: me.clone(),
                        to: local_ref("Service", namespace, &backend),
                    })?;
                }
            }
            _ => {}
        }
        sink.item(RawItem { source_type: kind.to_owned(), local_ref: me, fields })
    }

    fn keep_workload(
        &mut self,
        namespace: &str,
        pod_labels: BTreeMap<String, String>,
        me: String,
    ) -> Result<(), ImportError> {
        if self.workloads.len() >= MAX_SELECTOR_OBJECTS {
            return Err(ImportError::Invalid(format!(
                "more than {MAX_SELECTOR_OBJECTS} workloads (max_selector_objects)"
            )));
        }
        self.workloads.push((namespace.to_owned(), pod_labels, me));
        Ok(())
    }

    /// A Service selects the workloads of its namespace whose pod labels include its selector.
    fn relate(&self, sink: &mut dyn Sink) -> Result<(), ImportError> {
        let mut by_namespace: BTreeMap<&str, Vec<(&Labels, &String)>> = BTreeMap::new();
        for (namespace, pod_labels, workload) in &self.workloads {
            by_namespace.entry(namespace.as_str()).or_default().push((pod_labels, workload));
        }
        for (namespace, selector, service) in &self.services {
            for (pod_labels, workload) in by_namespace.get(namespace.as_str()).into_iter().flatten() {
                let selected = selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v));
                if selected {
                    sink.relationship(RawRelationship {
                        kind: "selects".into(),
                        from: service.clone(),
                        to: (*workload).clone(),
                    })?;
                }
            }
        }
        Ok(())
    }
}

fn first_image(pod_spec: Option<&Value>) -> Option<&str> {
    pod_spec?.get("containers")?.as_array()?.first().and_then(|c| text(c, &["image"]))
}

fn ingress_backends(spec: Option<&Value>) -> Vec<String> {
    let mut names = Vec::new();
    let Some(spec) = spec else { return names };
    if let Some(name) = text(spec, &["defaultBackend", "service", "name"]) {
        names.push(name.to_owned());
    }
    for rule in spec.get("rules").and_then(Value::as_array).into_iter().flatten() {
        for path in rule.get("http").and_then(|h| h.get("paths")).and_then(Value::as_array).into_iter().flatten() {
            if let Some(name) =
                text(path, &["backend", "service", "name"]).or_else(|| text(path, &["backend", "serviceName"]))
            {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

fn preview(value: &Value) -> String {
    let text = value.to_string();
    let mut end = text.len().min(80);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
