//! Attribute schemas of the built-in classes: each attribute's type and whether it is
//! required. Attributes describe a CI's function and physical characteristics (CM-1, 9.1.2).
//! Unknown attributes are refused: a typo must not become data.

use crate::model::CiClass;

/// Most attributes one CI may carry.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest text attribute, in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Most items in a list attribute.
pub const MAX_LIST_ITEMS: usize = 256;
/// Most weekly intervals in service hours.
pub const MAX_SERVICE_INTERVALS: usize = 28;

/// The type of an attribute's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttrType {
    /// Text of at most `max_text_bytes`.
    Text,
    /// An integer in a range.
    Integer {
        /// The smallest value allowed.
        min: i64,
        /// The largest value allowed.
        max: i64,
    },
    /// A number in a range.
    Number {
        /// The smallest value allowed.
        min: f64,
        /// The largest value allowed.
        max: f64,
    },
    /// True or false.
    Boolean,
    /// One of fixed names.
    Choice(&'static [&'static str]),
    /// A list of text.
    TextList,
    /// A list of IP addresses.
    IpAddressList,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An http(s) or git URL.
    Url,
    /// `{"time_zone": "<IANA zone>", "weekly": [{"days": ["mon",...], "start": "HH:MM", "end": "HH:MM"}]}`
    ServiceHours,
}

impl AttrType {
    /// Describes it in words, for error messages.
    pub fn describe(&self) -> String {
        match self {
            AttrType::Text => "text".into(),
            AttrType::Integer { min, max } => format!("an integer from {min} to {max}"),
            AttrType::Number { min, max } => format!("a number from {min} to {max}"),
            AttrType::Boolean => "true or false".into(),
            AttrType::Choice(choices) => format!("one of {}", choices.join(", ")),
            AttrType::TextList => "a list of text".into(),
            AttrType::IpAddressList => "a list of IP addresses".into(),
            AttrType::Date => "a date YYYY-MM-DD".into(),
            AttrType::Url => "a URL (http, https, ssh or git)".into(),
            AttrType::ServiceHours => {
                "service hours {\"time_zone\": IANA zone, \"weekly\": [{\"days\": [\"mon\",...], \"start\": \"HH:MM\", \"end\": \"HH:MM\"}]}".into()
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
/// One attribute of a built-in class: its name, type and whether it is required.
pub struct AttrSpec {
    /// The name.
    pub name: &'static str,
    /// Its type.
    pub attr_type: AttrType,
    /// Whether a CI must have it.
    pub required: bool,
}

const fn req(name: &'static str, attr_type: AttrType) -> AttrSpec {
    AttrSpec { name, attr_type, required: true }
}

const fn opt(name: &'static str, attr_type: AttrType) -> AttrSpec {
    AttrSpec { name, attr_type, required: false }
}

/// Attributes every class may carry.
pub const COMMON_ATTRIBUTES: &[AttrSpec] = &[
    opt("description", AttrType::Text),
    opt("tags", AttrType::TextList),
    opt("external_id", AttrType::Text),
    // Set by deployments (RL-3, CM-5): the artifact running and its digest.
    opt("artifact", AttrType::Text),
    opt("digest", AttrType::Text),
    // For a CI of a redundant class (a cluster, a pool): how many of its members (the CIs
    // `part_of` it) must be down for it to be down; fewer leave it degraded. Default: all.
    opt(MEMBERS_TO_FAIL, AttrType::Integer { min: 1, max: 1_000_000 }),
];

/// The attribute of a redundant group saying how many members must fail for it to be down.
pub const MEMBERS_TO_FAIL: &str = "members_to_fail";

const CORES: AttrType = AttrType::Integer { min: 1, max: 4096 };
const MEMORY: AttrType = AttrType::Integer { min: 1, max: 1 << 40 };
const PORT: AttrType = AttrType::Integer { min: 1, max: 65_535 };
const COUNT: AttrType = AttrType::Integer { min: 0, max: 1_000_000_000 };

/// The class-specific attributes.
#[allow(clippy::too_many_lines, reason = "one table: every built-in class and its attributes")]
pub fn class_attributes(class: CiClass) -> &'static [AttrSpec] {
    use AttrType::*;
    match class {
        CiClass::BusinessService => {
            const SPECS: &[AttrSpec] = &[
                req("criticality_tier", Integer { min: 1, max: 4 }),
                req("service_hours", ServiceHours),
                opt("availability_target_percent", Number { min: 0.0, max: 100.0 }),
                opt("max_tolerated_outage_minutes", COUNT),
            ];
            SPECS
        }
        CiClass::Application => {
            const SPECS: &[AttrSpec] = &[opt("repository", Url), opt("language", Text), opt("url", Url)];
            SPECS
        }
        CiClass::Database => {
            const SPECS: &[AttrSpec] = &[
                req(
                    "engine",
                    Choice(&[
                        "postgresql",
                        "mysql",
                        "mariadb",
                        "oracle",
                        "sqlserver",
                        "mongodb",
                        "redis",
                        "cassandra",
                        "other",
                    ]),
                ),
                opt("port", PORT),
                opt("size_gib", Number { min: 0.0, max: 1e9 }),
            ];
            SPECS
        }
        CiClass::Queue => {
            const SPECS: &[AttrSpec] = &[
                req("broker", Choice(&["kafka", "rabbitmq", "sqs", "activemq", "nats", "other"])),
                opt("topic", Text),
            ];
            SPECS
        }
        CiClass::Host => {
            const SPECS: &[AttrSpec] = &[
                req("hostname", Text),
                req("ip_addresses", IpAddressList),
                req("os", Text),
                req("cpu_cores", CORES),
                req("memory_mib", MEMORY),
                opt("serial_number", Text),
            ];
            SPECS
        }
        CiClass::VirtualMachine => {
            const SPECS: &[AttrSpec] = &[
                req("hostname", Text),
                req("ip_addresses", IpAddressList),
                req("os", Text),
                req("cpu_cores", CORES),
                req("memory_mib", MEMORY),
                opt("hypervisor", Text),
            ];
            SPECS
        }
        CiClass::Container => {
            const SPECS: &[AttrSpec] = &[req("image", Text), opt("replicas", COUNT)];
            SPECS
        }
        CiClass::KubernetesCluster => {
            const SPECS: &[AttrSpec] = &[
                opt("distribution", Text),
                opt("api_endpoint", Url),
                opt("node_count", COUNT),
                opt("kubernetes_version", Text),
            ];
            SPECS
        }
        CiClass::NetworkDevice => {
            const SPECS: &[AttrSpec] = &[
                req("device_type", Choice(&["router", "switch", "load_balancer", "access_point", "gateway"])),
                opt("ip_addresses", IpAddressList),
                opt("model", Text),
                opt("firmware", Text),
            ];
            SPECS
        }
        CiClass::Firewall => {
            const SPECS: &[AttrSpec] =
                &[opt("ip_addresses", IpAddressList), opt("model", Text), opt("ruleset_version", Text)];
            SPECS
        }
        CiClass::Licence => {
            const SPECS: &[AttrSpec] = &[
                req("licence_type", Choice(&["perpetual", "subscription", "open_source"])),
                opt("product", Text),
                opt("seats", COUNT),
                opt("expires_on", Date),
            ];
            SPECS
        }
        CiClass::Document => {
            const SPECS: &[AttrSpec] = &[
                req("document_type", Choice(&["design", "test", "release", "sla", "runbook", "contract", "other"])),
                req("uri", Url),
            ];
            SPECS
        }
        CiClass::PhysicalAsset => {
            const SPECS: &[AttrSpec] =
                &[req("asset_tag", Text), opt("model", Text), opt("serial_number", Text), opt("media_type", Text)];
            SPECS
        }
        CiClass::Location => {
            const SPECS: &[AttrSpec] = &[opt("address", Text), opt("site_code", Text), opt("country", Text)];
            SPECS
        }
        CiClass::Supplier => {
            const SPECS: &[AttrSpec] = &[opt("contact_email", Text), opt("review_date", Date)];
            SPECS
        }
        CiClass::Contract => {
            const SPECS: &[AttrSpec] =
                &[opt("reference", Text), opt("start_date", Date), opt("end_date", Date), opt("review_date", Date)];
            SPECS
        }
        CiClass::Person => {
            const SPECS: &[AttrSpec] = &[req("email", Text)];
            SPECS
        }
        CiClass::Custom(_) => &[],
        CiClass::Team => {
            const SPECS: &[AttrSpec] = &[opt("email", Text), opt("on_call", Text)];
            SPECS
        }
    }
}

/// The spec of one built-in attribute of a class, common or specific.
pub fn attribute_spec(class: CiClass, name: &str) -> Option<&'static AttrSpec> {
    class_attributes(class).iter().chain(COMMON_ATTRIBUTES).find(|spec| spec.name == name)
}
