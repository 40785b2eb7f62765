//! The importers against the real files in ../shared/data (issue 17, parts 1 and 6): every
//! Terraform state is read or refused with a clear error, the demo shop's manifests, the
//! Keycloak SBOM and the NetBox demo export yield what they hold. Mapping and recording are
//! tested in `discovery.rs`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use cmdb_api::import::{self, ImportError, RawItem, RawRelationship, Sink};
use cmdb_core::discovery::SourceKind;

#[derive(Default)]
struct Collect {
    items: Vec<RawItem>,
    relationships: Vec<RawRelationship>,
}

impl Sink for Collect {
    fn item(&mut self, item: RawItem) -> Result<(), ImportError> {
        self.items.push(item);
        Ok(())
    }

    fn relationship(&mut self, relationship: RawRelationship) -> Result<(), ImportError> {
        self.relationships.push(relationship);
        Ok(())
    }
}

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data").join(path)
}

fn read(source: SourceKind, path: &Path) -> Result<Collect, ImportError> {
    let mut sink = Collect::default();
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    import::read(source, BufReader::new(file), &mut sink)?;
    Ok(sink)
}

fn kinds(items: &[RawItem]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item.source_type.as_str()).or_default() += 1;
    }
    counts
}

#[test]
fn every_terraform_state_is_read_or_refused_with_a_clear_error() {
    let dir = data("terraform-state/driftctl");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("the states").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert_eq!(files.len(), 153);
    let (mut read_ok, mut refused) = (0, Vec::new());
    let mut resources = 0;
    for path in &files {
        match read(SourceKind::Terraform, path) {
            Ok(sink) => {
                read_ok += 1;
                resources += sink.items.len();
                for item in &sink.items {
                    assert!(item.fields.contains_key("address"), "{}: {item:?}", path.display());
                }
            }
            Err(error) => {
                refused.push((path.file_name().expect("name").to_string_lossy().into_owned(), error.to_string()))
            }
        }
    }
    let names: Vec<&str> = refused.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["testdata__v4__invalid.tfstate", "testdata__v4__unsupported_version.tfstate"], "{refused:?}");
    assert!(
        refused[0].1.contains("not valid Terraform state JSON") && refused[0].1.contains("line"),
        "{}",
        refused[0].1
    );
    assert!(refused[1].1.contains("Terraform 0.10.26"), "{}", refused[1].1);
    assert_eq!(read_ok, 151);
    assert!(resources > 300, "{resources} managed resource instances");
}

#[test]
fn the_demo_shop_manifests_hold_twelve_services_and_their_deployments() {
    let sink = read(SourceKind::Kubernetes, &data("k8s/microservices-demo-kubernetes-manifests.yaml")).expect("read");
    let counts = kinds(&sink.items);
    assert_eq!(counts.get("Service"), Some(&12), "{counts:?}");
    assert_eq!(counts.get("Deployment"), Some(&12), "{counts:?}");
    let selects: Vec<&RawRelationship> = sink.relationships.iter().filter(|r| r.kind == "selects").collect();
    // frontend and frontend-external both select the frontend Deployment; loadgenerator has no Service.
    assert_eq!(selects.len(), 12, "{selects:?}");
    assert!(
        selects.iter().any(|r| r.from == "Service/default/frontend-external" && r.to == "Deployment/default/frontend")
    );
    let cart = sink.items.iter().find(|i| i.local_ref == "Deployment/default/cartservice").expect("cartservice");
    assert!(cart.fields["image"].as_str().is_some_and(|i| i.contains("cartservice")), "{cart:?}");
}

#[test]
fn a_kubectl_json_list_is_read_item_by_item() {
    let list = br#"{"apiVersion": "v1", "kind": "List", "items": [
        {"kind": "Namespace", "metadata": {"name": "shop", "uid": "ns-1"}},
        {"kind": "Node", "metadata": {"name": "node-a", "uid": "n-1"}, "status": {"nodeInfo": {"kubeletVersion": "v1.30.1", "osImage": "Ubuntu 24.04"}}},
        {"kind": "Pod", "metadata": {"name": "cart-1", "namespace": "shop", "uid": "p-1"}, "spec": {"nodeName": "node-a", "containers": [{"image": "cart:2"}]}},
        {"kind": "Ingress", "metadata": {"name": "web", "namespace": "shop"}, "spec": {"rules": [{"http": {"paths": [{"backend": {"service": {"name": "cart"}}}]}}]}}
    ]}"#;
    let mut sink = Collect::default();
    import::read(SourceKind::Kubernetes, &list[..], &mut sink).expect("read");
    assert_eq!(kinds(&sink.items).len(), 4);
    let kinds: Vec<&str> = sink.relationships.iter().map(|r| r.kind.as_str()).collect();
    assert!(
        kinds.contains(&"scheduled_on") && kinds.contains(&"routes_to") && kinds.contains(&"in_namespace"),
        "{kinds:?}"
    );
    let broken = b"kind: Service\nmetadata:\n  name: [unclosed\n";
    let error = import::read(SourceKind::Kubernetes, &broken[..], &mut Collect::default()).expect_err("bad YAML");
    assert!(error.to_string().contains("YAML"), "{error}");
    let nameless = b"kind: Service\nspec: {}\n";
    let error = import::read(SourceKind::Kubernetes, &nameless[..], &mut Collect::default()).expect_err("no name");
    assert!(error.to_string().contains("metadata.name"), "{error}");
}

#[test]
fn the_keycloak_sbom_yields_903_components_and_their_dependencies() {
    let sink = read(SourceKind::Cyclonedx, &data("sbom/cyclonedx/SBOM/keycloak-10.0.2/bom.json")).expect("read");
    // 903 components plus the BOM's own metadata.component, where it has one.
    let libraries = sink.items.iter().filter(|i| i.fields.contains_key("purl")).count();
    assert!(libraries >= 903, "{libraries}");
    assert!(sink.relationships.iter().all(|r| r.kind == "depends_on"));
    assert!(!sink.relationships.is_empty());
    let saas =
        read(SourceKind::Cyclonedx, &data("sbom/cyclonedx/SaaSBOM/apigateway-microservices-datastores/bom.json"))
            .expect("read");
    assert!(saas.items.iter().any(|i| i.source_type == "service"), "{:?}", kinds(&saas.items));
    let old = br#"{"bomFormat": "CycloneDX", "specVersion": "1.1", "components": []}"#;
    let error = import::read(SourceKind::Cyclonedx, &old[..], &mut Collect::default()).expect_err("1.1");
    assert!(error.to_string().contains("spec version 1.1"), "{error}");
}

#[test]
fn the_netbox_demo_yields_devices_interfaces_cables_and_vms() {
    let sink = read(SourceKind::Netbox, &data("cmdb-datasets/netbox-demo/netbox-demo-v3.6.json")).expect("read");
    let counts = kinds(&sink.items);
    assert_eq!(counts.get("dcim.device"), Some(&72), "{counts:?}");
    assert_eq!(counts.get("dcim.interface"), Some(&1586), "{counts:?}");
    assert_eq!(counts.get("virtualization.virtualmachine"), Some(&180), "{counts:?}");
    assert_eq!(counts.get("dcim.site"), Some(&24), "{counts:?}");
    let cables = sink.relationships.iter().filter(|r| r.kind == "cable").count();
    assert!(cables > 0 && cables <= 108, "{cables} interface-to-interface cables");
    assert!(sink.relationships.iter().filter(|r| r.kind == "on_device").count() >= 1586);
    let error =
        import::read(SourceKind::Netbox, &b"{\"model\": 1}"[..], &mut Collect::default()).expect_err("not a list");
    assert!(error.to_string().contains("NetBox"), "{error}");
}
