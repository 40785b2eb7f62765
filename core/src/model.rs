//! The vocabulary of configuration items (CM-1, CM-2, CM-5): classes, life-cycle status,
//! environments, relationship types, and the two rule tables (allowed status transitions;
//! which classes a relationship may join and how impact propagates across it). Also the one
//! macro every named enum of the domain is made with, and [`ModelError`], the error of parsing
//! any of these names or ids.
//!
//! Architecture invariant: this module depends on nothing of the domain. The CI domain, the
//! change domain and the CM-3 contract between them (the `control` module) all use it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name or an id of the vocabulary could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum ModelError {
    /// Not a UUID.
    #[error("{input:?} is not a {what} id (a UUID)")]
    InvalidId {
        /// What the id names.
        what: &'static str,
        /// The text given.
        input: String,
    },
    /// Not one of the names of an enumeration.
    #[error("unknown {what} {input:?}; expected one of {expected}")]
    UnknownName {
        /// What the name names.
        what: &'static str,
        /// The text given.
        input: String,
        /// The names it may be.
        expected: String,
    },
    /// A custom class name of the wrong shape.
    #[error("class name {0:?} is not valid: 2 to 63 bytes of lowercase letters, digits and _, starting with a letter")]
    InvalidClassName(String),
    /// A custom class name that is a built-in class's or already declared.
    #[error("{0:?} is a built-in class or an already declared class")]
    ClassNameTaken(String),
    /// The process holds [`MAX_CUSTOM_CLASS_NAMES`] names already.
    #[error("too many distinct class names in this process (max_custom_class_names is {MAX_CUSTOM_CLASS_NAMES})")]
    TooManyClassNames,
    /// Not a change number.
    #[error("{0:?} is not a change number; expected CHG- and digits, as in CHG-000042")]
    InvalidChangeNumber(String),
    /// Neither a change id nor a change number.
    #[error("{0:?} is neither a change id (a UUID) nor a change number (CHG- and digits, as in CHG-000042)")]
    InvalidChangeRef(String),
}

/// A name as uniqueness and matching compare it: trimmed and lowercase.
pub fn normalized_name(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Exact names only (`in_test`).
pub(crate) fn exact(text: &str) -> String {
    text.to_owned()
}

/// Names in any case, with `-` for `_` (`Back-Out`).
pub(crate) fn lenient(text: &str) -> String {
    text.trim().to_ascii_lowercase().replace('-', "_")
}

/// An enum with a fixed snake_case name per variant, `ALL`, `as_str`, `Display` and a
/// `FromStr` that refuses other names with [`ModelError::UnknownName`]. `$normalize` maps the
/// input before it is compared ([`exact`] or [`lenient`]).
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, $normalize:path { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value's name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::model::ModelError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let wanted = $normalize(s);
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == wanted)
                    .ok_or_else(|| $crate::model::ModelError::UnknownName {
                        what: $what,
                        input: s.to_owned(),
                        expected: $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                    })
            }
        }
    };
}
pub(crate) use named_enum;

/// Most distinct custom class names one process holds (names are interned once each).
pub const MAX_CUSTOM_CLASS_NAMES: usize = 10_000;
/// Longest custom class name, in bytes.
pub const MAX_CLASS_NAME_BYTES: usize = 63;

/// The name of a class declared at run time, interned so that `CiClass` stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CustomClass(&'static str);

impl CustomClass {
    /// The value's name.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for CustomClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomClass({:?})", self.0)
    }
}

fn interned() -> &'static std::sync::Mutex<std::collections::HashSet<&'static str>> {
    static NAMES: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<&'static str>>> =
        std::sync::OnceLock::new();
    NAMES.get_or_init(Default::default)
}

/// A class: one of the built-in classes (CM-1), or one declared by an admin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CiClass {
    /// A service the business uses, with its tier, hours and owners.
    BusinessService,
    /// An application.
    Application,
    /// A database.
    Database,
    /// A message queue.
    Queue,
    /// A physical host.
    Host,
    /// A virtual machine.
    VirtualMachine,
    /// A container.
    Container,
    /// A Kubernetes cluster.
    KubernetesCluster,
    /// A switch, router or load balancer.
    NetworkDevice,
    /// A firewall.
    Firewall,
    /// A software licence.
    Licence,
    /// A document (runbook, architecture, contract text).
    Document,
    /// Other hardware (racks, appliances).
    PhysicalAsset,
    /// A site.
    Location,
    /// A supplier.
    Supplier,
    /// A contract with a supplier.
    Contract,
    /// A person.
    Person,
    /// A team.
    Team,
    /// A class an admin declared.
    Custom(CustomClass),
}

impl CiClass {
    /// The built-in classes.
    pub const BUILTIN: &'static [CiClass] = &[
        CiClass::BusinessService,
        CiClass::Application,
        CiClass::Database,
        CiClass::Queue,
        CiClass::Host,
        CiClass::VirtualMachine,
        CiClass::Container,
        CiClass::KubernetesCluster,
        CiClass::NetworkDevice,
        CiClass::Firewall,
        CiClass::Licence,
        CiClass::Document,
        CiClass::PhysicalAsset,
        CiClass::Location,
        CiClass::Supplier,
        CiClass::Contract,
        CiClass::Person,
        CiClass::Team,
    ];

    /// The value's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CiClass::BusinessService => "business_service",
            CiClass::Application => "application",
            CiClass::Database => "database",
            CiClass::Queue => "queue",
            CiClass::Host => "host",
            CiClass::VirtualMachine => "virtual_machine",
            CiClass::Container => "container",
            CiClass::KubernetesCluster => "kubernetes_cluster",
            CiClass::NetworkDevice => "network_device",
            CiClass::Firewall => "firewall",
            CiClass::Licence => "licence",
            CiClass::Document => "document",
            CiClass::PhysicalAsset => "physical_asset",
            CiClass::Location => "location",
            CiClass::Supplier => "supplier",
            CiClass::Contract => "contract",
            CiClass::Person => "person",
            CiClass::Team => "team",
            CiClass::Custom(custom) => custom.0,
        }
    }

    /// Whether it is built in.
    pub fn is_builtin(self) -> bool {
        !matches!(self, CiClass::Custom(_))
    }

    /// Checks a custom class name: lowercase letters, digits and `_`, starting with a letter,
    /// 2 to 63 bytes, not a built-in name.
    pub fn check_custom_name(name: &str) -> Result<(), ModelError> {
        let shaped = (2..=MAX_CLASS_NAME_BYTES).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !shaped {
            return Err(ModelError::InvalidClassName(name.to_owned()));
        }
        if CiClass::BUILTIN.iter().any(|b| b.as_str() == name) {
            return Err(ModelError::ClassNameTaken(name.to_owned()));
        }
        Ok(())
    }

    /// The class named by a declaration or a stored event: interns a custom name (once).
    pub fn declared(name: &str) -> Result<CiClass, ModelError> {
        if let Some(builtin) = CiClass::BUILTIN.iter().find(|b| b.as_str() == name) {
            return Ok(*builtin);
        }
        CiClass::check_custom_name(name)?;
        let mut names = interned().lock().map_err(|_| ModelError::InvalidClassName(name.to_owned()))?;
        if let Some(existing) = names.get(name) {
            return Ok(CiClass::Custom(CustomClass(existing)));
        }
        if names.len() >= MAX_CUSTOM_CLASS_NAMES {
            return Err(ModelError::TooManyClassNames);
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.insert(leaked);
        Ok(CiClass::Custom(CustomClass(leaked)))
    }
}

impl fmt::Display for CiClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a class named by a user: a built-in class (any case), or a custom class this
/// process already knows from its declaration. Never interns: unknown names are refused.
impl FromStr for CiClass {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        if let Some(builtin) = CiClass::BUILTIN.iter().find(|b| b.as_str() == lower) {
            return Ok(*builtin);
        }
        let known = interned().lock().ok().and_then(|names| names.get(lower.as_str()).copied());
        known.map(|name| CiClass::Custom(CustomClass(name))).ok_or_else(|| ModelError::UnknownName {
            what: "class",
            input: s.to_owned(),
            expected: CiClass::BUILTIN.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
                + ", or a declared custom class",
        })
    }
}

impl Serialize for CiClass {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CiClass {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        CiClass::declared(&name).map_err(serde::de::Error::custom)
    }
}

named_enum!(
    /// Life-cycle status (CM-5).
    Status, "status", exact {
        /// Planned, not yet ordered or built.
        Planned => "planned",
        /// Ordered from a supplier.
        Ordered => "ordered",
        /// Received, not yet in service.
        Received => "received",
        /// Being tested.
        InTest => "in_test",
        /// In service.
        Live => "live",
        /// Out of normal service while a change is carried out.
        UnderChange => "under_change",
        /// Withdrawn for good: it can no longer change.
        Withdrawn => "withdrawn",
    }
);

named_enum!(
    /// Where a CI runs.
    Environment, "environment", exact {
        /// Development.
        Development => "development",
        /// Test.
        Test => "test",
        /// Staging.
        Staging => "staging",
        /// Production.
        Production => "production",
    }
);

named_enum!(
    /// Relationship types (CM-2). Each relationship has its own id and history.
    RelType, "relationship type", exact {
        /// The source needs the target.
        DependsOn => "depends_on",
        /// The source runs on the target (a host, VM, cluster or container).
        RunsOn => "runs_on",
        /// The source hosts the target (the inverse view of `runs_on`).
        Hosts => "hosts",
        /// A network connection; impact travels both ways.
        ConnectsTo => "connects_to",
        /// The source is part of the target.
        PartOf => "part_of",
        /// The source provides a business service.
        Provides => "provides",
        /// The source consumes the target.
        Consumes => "consumes",
        /// The target documents the source.
        DocumentedBy => "documented_by",
        /// The source is licensed by the target.
        LicensedBy => "licensed_by",
        /// The source is supplied under the target (a supplier or contract).
        SuppliedBy => "supplied_by",
    }
);

/// The allowed life-cycle transitions: the one table.
pub const STATUS_TRANSITIONS: &[(Status, &[Status])] = &[
    (Status::Planned, &[Status::Ordered, Status::InTest, Status::Live, Status::Withdrawn]),
    (Status::Ordered, &[Status::Received, Status::Withdrawn]),
    (Status::Received, &[Status::InTest, Status::Live, Status::Withdrawn]),
    (Status::InTest, &[Status::Live, Status::Received, Status::Withdrawn]),
    (Status::Live, &[Status::UnderChange, Status::Withdrawn]),
    (Status::UnderChange, &[Status::Live, Status::InTest, Status::Withdrawn]),
    (Status::Withdrawn, &[]),
];

/// The statuses a CI may be registered in.
pub const INITIAL_STATUSES: &[Status] =
    &[Status::Planned, Status::Ordered, Status::Received, Status::InTest, Status::Live];

/// Whether the status table allows `from` to `to`.
pub fn transition_allowed(from: Status, to: Status) -> bool {
    STATUS_TRANSITIONS.iter().any(|(source, targets)| *source == from && targets.contains(&to))
}

/// Which way a failure travels across a relationship (who depends on whom).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// The source depends on the target: the target's failure impacts the source.
    SourceDependsOnTarget,
    /// The target depends on the source.
    TargetDependsOnSource,
    /// Each depends on the other.
    Both,
    /// No impact travels across it.
    None,
}

use CiClass::*;

const COMPUTE: &[CiClass] = &[Host, VirtualMachine, KubernetesCluster, Container];
const RUNS_ON_SOURCES: &[CiClass] = &[Application, Database, Queue, Container, VirtualMachine, KubernetesCluster];
const NETWORKED: &[CiClass] =
    &[Host, VirtualMachine, KubernetesCluster, Container, NetworkDevice, Firewall, PhysicalAsset];
const TECHNICAL: &[CiClass] = &[
    BusinessService,
    Application,
    Database,
    Queue,
    Container,
    Host,
    VirtualMachine,
    KubernetesCluster,
    NetworkDevice,
    Firewall,
    PhysicalAsset,
];
const SUPPLIED: &[CiClass] = &[
    BusinessService,
    Application,
    Database,
    Queue,
    Container,
    Host,
    VirtualMachine,
    KubernetesCluster,
    NetworkDevice,
    Firewall,
    PhysicalAsset,
    Licence,
    Contract,
];
const PROVIDERS: &[CiClass] =
    &[Application, Database, Queue, Container, Host, VirtualMachine, KubernetesCluster, BusinessService];
const CONSUMERS: &[CiClass] = &[BusinessService, Application];
const CONSUMED: &[CiClass] = &[BusinessService, Application, Database, Queue];
const ANY: &[CiClass] = CiClass::BUILTIN;

/// How badly a failure reaches a CI (issue 15). Ordered: degraded is less than down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Still working with less capacity or redundancy: some members of a redundant group
    /// below it are down, or something it depends on is degraded.
    Degraded,
    /// Not working.
    Down,
}

impl Severity {
    /// The name used in APIs and policy input.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Degraded => "DEGRADED",
            Severity::Down => "DOWN",
        }
    }
}

/// Classes whose CIs are redundant groups unless an admin declares otherwise
/// (a `schema.class_redundancy_declared` event): a Kubernetes cluster exists to survive
/// the loss of a node, so a member (`part_of` it) failing degrades it; it is down only when its
/// `members_to_fail` members (all by default) are down. Custom classes inherit it from the
/// built-in class they behave like.
pub const REDUNDANT_BY_DEFAULT: &[CiClass] = &[KubernetesCluster];

/// One row of the relationship table.
#[derive(Clone, Copy, Debug)]
pub struct RelRule {
    /// The relationship type.
    pub rel_type: RelType,
    /// Classes it may go from.
    pub sources: &'static [CiClass],
    /// Classes it may go to.
    pub targets: &'static [CiClass],
    /// How impact crosses it.
    pub propagation: Propagation,
    /// Why impact crosses it that way (reviewed in issue 15; ARCHITECTURE.md repeats it).
    pub rationale: &'static str,
}

/// Which classes each relationship may join, and how impact crosses it. `runs_on` and
/// `hosts` are inverse views of one dependency (an application runs on a host; a host hosts
/// an application: either way the application depends on the host).
pub const RELATIONSHIP_RULES: &[RelRule] = &[
    RelRule {
        rel_type: RelType::DependsOn,
        sources: TECHNICAL,
        targets: TECHNICAL,
        propagation: Propagation::SourceDependsOnTarget,
        rationale: "what the source needs to work is the target: the target failing breaks the source, not the other way",
    },
    RelRule {
        rel_type: RelType::RunsOn,
        sources: RUNS_ON_SOURCES,
        targets: COMPUTE,
        propagation: Propagation::SourceDependsOnTarget,
        rationale: "software stops when the machine or platform under it stops; a crashed application leaves its host up",
    },
    RelRule {
        rel_type: RelType::Hosts,
        sources: COMPUTE,
        targets: RUNS_ON_SOURCES,
        propagation: Propagation::TargetDependsOnSource,
        rationale: "the inverse view of runs_on: the hosted target stops with its host",
    },
    RelRule {
        rel_type: RelType::ConnectsTo,
        sources: NETWORKED,
        targets: NETWORKED,
        propagation: Propagation::SourceDependsOnTarget,
        rationale: "record it from the connected CI to the network device it hangs off: the device failing cuts what is connected to it; a host failing does not take down its switch (both ways, one switch reached most of an estate)",
    },
    RelRule {
        rel_type: RelType::PartOf,
        sources: ANY,
        targets: ANY,
        propagation: Propagation::TargetDependsOnSource,
        rationale: "a whole made of parts loses function when a part fails; the whole failing does not break each part (its members keep running). A redundant whole (a cluster, a pool) is only degraded until its members_to_fail members are down",
    },
    RelRule {
        rel_type: RelType::Provides,
        sources: PROVIDERS,
        targets: &[BusinessService],
        propagation: Propagation::TargetDependsOnSource,
        rationale: "a business service is delivered by what provides it: a provider failing degrades the service",
    },
    RelRule {
        rel_type: RelType::Consumes,
        sources: CONSUMERS,
        targets: CONSUMED,
        propagation: Propagation::SourceDependsOnTarget,
        rationale: "a consumer fails when what it consumes fails; a provider does not fail because a consumer did",
    },
    RelRule {
        rel_type: RelType::DocumentedBy,
        sources: ANY,
        targets: &[Document],
        propagation: Propagation::None,
        rationale: "documents describe; no outage travels through them",
    },
    RelRule {
        rel_type: RelType::LicensedBy,
        sources: TECHNICAL,
        targets: &[Licence],
        propagation: Propagation::None,
        rationale: "a licence ending is a compliance matter handled by its own dates, not an outage that travels",
    },
    RelRule {
        rel_type: RelType::SuppliedBy,
        sources: SUPPLIED,
        targets: &[Supplier, Contract],
        propagation: Propagation::SourceDependsOnTarget,
        rationale: "a supplier or contract failing (support ends, a supplier goes under) puts what it supplies at risk; a supplied CI failing does not affect its supplier",
    },
];

/// How impact crosses a relationship type: a constant-time form of the table, for traversals.
pub const fn propagation(rel_type: RelType) -> Propagation {
    match rel_type {
        RelType::DependsOn | RelType::RunsOn | RelType::Consumes | RelType::SuppliedBy => {
            Propagation::SourceDependsOnTarget
        }
        RelType::Hosts | RelType::PartOf | RelType::Provides => Propagation::TargetDependsOnSource,
        RelType::ConnectsTo => Propagation::SourceDependsOnTarget,
        RelType::DocumentedBy | RelType::LicensedBy => Propagation::None,
    }
}

/// The rule for a relationship type.
pub fn rule(rel_type: RelType) -> &'static RelRule {
    RELATIONSHIP_RULES.iter().find(|r| r.rel_type == rel_type).expect("every relationship type has a rule")
}

/// Classes that may own CIs, and the class of a location.
pub const OWNER_CLASSES: &[CiClass] = &[Person, Team];
/// The class of a location reference.
pub const LOCATION_CLASSES: &[CiClass] = &[Location];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_one_row_and_withdrawn_is_terminal() {
        for status in Status::ALL {
            assert_eq!(STATUS_TRANSITIONS.iter().filter(|(s, _)| s == status).count(), 1, "{status}");
            if *status != Status::Withdrawn {
                assert!(transition_allowed(*status, Status::Withdrawn), "{status} can be withdrawn");
            }
        }
        assert!(Status::ALL.iter().all(|s| !transition_allowed(Status::Withdrawn, *s)));
        assert!(transition_allowed(Status::Live, Status::UnderChange));
        assert!(!transition_allowed(Status::Ordered, Status::Live));
    }

    #[test]
    fn every_relationship_type_has_one_rule() {
        for rel_type in RelType::ALL {
            assert_eq!(RELATIONSHIP_RULES.iter().filter(|r| r.rel_type == *rel_type).count(), 1, "{rel_type}");
        }
        assert_eq!(rule(RelType::DocumentedBy).propagation, Propagation::None);
        assert_eq!(rule(RelType::LicensedBy).propagation, Propagation::None);
        assert_eq!(rule(RelType::ConnectsTo).propagation, Propagation::SourceDependsOnTarget, "issue 15");
        assert_eq!(rule(RelType::RunsOn).propagation, Propagation::SourceDependsOnTarget);
        assert_eq!(rule(RelType::Hosts).propagation, Propagation::TargetDependsOnSource);
    }

    #[test]
    fn the_constant_time_propagation_agrees_with_the_table() {
        for rule in RELATIONSHIP_RULES {
            assert_eq!(propagation(rule.rel_type), rule.propagation, "{}", rule.rel_type);
        }
    }

    #[test]
    fn names_parse_and_unknown_names_list_the_choices() {
        assert_eq!("virtual_machine".parse::<CiClass>(), Ok(CiClass::VirtualMachine));
        let error = "server".parse::<CiClass>().expect_err("unknown");
        assert!(error.to_string().contains("business_service"), "{error}");
        assert!("under_change".parse::<Status>().is_ok());
        assert!("prod".parse::<Environment>().is_err());
    }
}
