//! The vocabulary of configuration items (CM-1, CM-2, CM-5): ids, classes, life-cycle
//! status, environments, relationship types, and the two rule tables (allowed status
//! transitions; which classes a relationship may join and how impact propagates across it).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::StreamId;

use super::CiError;

macro_rules! id_type {
    ($name:ident, $prefix:literal, $what:literal) => {
        #[doc = concat!("The immutable id of a ", $what, ".")]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The stream holding this one's events.
            pub fn stream(&self) -> StreamId {
                StreamId::new(format!(concat!($prefix, "{}"), self.0)).expect("a uuid stream id is valid")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = CiError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim())
                    .map($name)
                    .map_err(|_| CiError::InvalidId { what: $what, input: s.to_owned() })
            }
        }
    };
}

id_type!(CiId, "ci-", "configuration item");
id_type!(RelId, "rel-", "relationship");
id_type!(ChangeId, "change-", "change");

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = CiError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| CiError::UnknownName {
                        what: $what,
                        input: s.to_owned(),
                        expected: $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                    })
            }
        }
    };
}

named_enum!(
    /// The built-in classes (CM-1).
    CiClass, "class" {
        BusinessService => "business_service",
        Application => "application",
        Database => "database",
        Queue => "queue",
        Host => "host",
        VirtualMachine => "virtual_machine",
        Container => "container",
        KubernetesCluster => "kubernetes_cluster",
        NetworkDevice => "network_device",
        Firewall => "firewall",
        Licence => "licence",
        Document => "document",
        PhysicalAsset => "physical_asset",
        Location => "location",
        Supplier => "supplier",
        Contract => "contract",
        Person => "person",
        Team => "team",
    }
);

named_enum!(
    /// Life-cycle status (CM-5).
    Status, "status" {
        Planned => "planned",
        Ordered => "ordered",
        Received => "received",
        InTest => "in_test",
        Live => "live",
        UnderChange => "under_change",
        Withdrawn => "withdrawn",
    }
);

named_enum!(
    Environment, "environment" {
        Development => "development",
        Test => "test",
        Staging => "staging",
        Production => "production",
    }
);

named_enum!(
    /// Relationship types (CM-2). Each relationship has its own id and history.
    RelType, "relationship type" {
        DependsOn => "depends_on",
        RunsOn => "runs_on",
        Hosts => "hosts",
        ConnectsTo => "connects_to",
        PartOf => "part_of",
        Provides => "provides",
        Consumes => "consumes",
        DocumentedBy => "documented_by",
        LicensedBy => "licensed_by",
        SuppliedBy => "supplied_by",
    }
);

/// The allowed life-cycle transitions: the one table.
pub const TRANSITIONS: &[(Status, &[Status])] = &[
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

pub fn transition_allowed(from: Status, to: Status) -> bool {
    TRANSITIONS.iter().any(|(source, targets)| *source == from && targets.contains(&to))
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
const ANY: &[CiClass] = CiClass::ALL;

/// One row of the relationship table.
#[derive(Clone, Copy, Debug)]
pub struct RelRule {
    pub rel_type: RelType,
    pub sources: &'static [CiClass],
    pub targets: &'static [CiClass],
    pub propagation: Propagation,
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
    },
    RelRule {
        rel_type: RelType::RunsOn,
        sources: RUNS_ON_SOURCES,
        targets: COMPUTE,
        propagation: Propagation::SourceDependsOnTarget,
    },
    RelRule {
        rel_type: RelType::Hosts,
        sources: COMPUTE,
        targets: RUNS_ON_SOURCES,
        propagation: Propagation::TargetDependsOnSource,
    },
    RelRule { rel_type: RelType::ConnectsTo, sources: NETWORKED, targets: NETWORKED, propagation: Propagation::Both },
    RelRule { rel_type: RelType::PartOf, sources: ANY, targets: ANY, propagation: Propagation::TargetDependsOnSource },
    RelRule {
        rel_type: RelType::Provides,
        sources: PROVIDERS,
        targets: &[BusinessService],
        propagation: Propagation::TargetDependsOnSource,
    },
    RelRule {
        rel_type: RelType::Consumes,
        sources: CONSUMERS,
        targets: CONSUMED,
        propagation: Propagation::SourceDependsOnTarget,
    },
    RelRule { rel_type: RelType::DocumentedBy, sources: ANY, targets: &[Document], propagation: Propagation::None },
    RelRule { rel_type: RelType::LicensedBy, sources: TECHNICAL, targets: &[Licence], propagation: Propagation::None },
    RelRule {
        rel_type: RelType::SuppliedBy,
        sources: SUPPLIED,
        targets: &[Supplier, Contract],
        propagation: Propagation::SourceDependsOnTarget,
    },
];

/// How impact crosses a relationship type: a constant-time form of the table, for traversals.
pub const fn propagation(rel_type: RelType) -> Propagation {
    match rel_type {
        RelType::DependsOn | RelType::RunsOn | RelType::Consumes | RelType::SuppliedBy => {
            Propagation::SourceDependsOnTarget
        }
        RelType::Hosts | RelType::PartOf | RelType::Provides => Propagation::TargetDependsOnSource,
        RelType::ConnectsTo => Propagation::Both,
        RelType::DocumentedBy | RelType::LicensedBy => Propagation::None,
    }
}

/// The rule for a relationship type.
pub fn rule(rel_type: RelType) -> &'static RelRule {
    RELATIONSHIP_RULES.iter().find(|r| r.rel_type == rel_type).expect("every relationship type has a rule")
}

/// Classes that may own CIs, and the class of a location.
pub const OWNER_CLASSES: &[CiClass] = &[Person, Team];
pub const LOCATION_CLASSES: &[CiClass] = &[Location];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_one_row_and_withdrawn_is_terminal() {
        for status in Status::ALL {
            assert_eq!(TRANSITIONS.iter().filter(|(s, _)| s == status).count(), 1, "{status}");
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
        assert_eq!(rule(RelType::ConnectsTo).propagation, Propagation::Both);
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
