//! Settings of `cmdb serve`: from flags and `CMDB_*` environment variables (flags win), each
//! with its unit in its name, validated at start with a message that names the setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use cmdb_core::access::Role;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Upper bounds the settings themselves must respect, so a typo cannot disable a limit.
pub const MAX_PAGE_SIZE_CEILING: usize = 10_000;
/// The highest `max_response_bytes` accepted.
pub const MAX_RESPONSE_BYTES_CEILING: usize = 1024 * 1024 * 1024;
/// The default of `cost_per_second`: readers a little less than those who write.
pub const DEFAULT_COST_PER_SECOND: &str = "viewer=200000,auditor=200000,editor=400000,change-manager=400000,approver=400000,emergency-approver=400000,deployer=400000,admin=400000";

/// Cost units per second, by role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleRates(pub std::collections::BTreeMap<Role, u64>);

impl RoleRates {
    /// The rate of a caller with these roles: its best role's, or the viewer rate.
    pub fn of(&self, roles: &std::collections::BTreeSet<Role>) -> u64 {
        let viewer = self.0.get(&Role::Viewer).copied().unwrap_or(1);
        roles.iter().filter_map(|role| self.0.get(role)).copied().max().unwrap_or(viewer)
    }

    /// Every role named, with its rate.
    pub fn iter(&self) -> impl Iterator<Item = (Role, u64)> + '_ {
        self.0.iter().map(|(role, rate)| (*role, *rate))
    }
}

/// Parses `role=units,role=units`.
pub fn parse_role_rates(text: &str) -> Result<RoleRates, String> {
    let mut rates = std::collections::BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (role, units) =
            pair.split_once('=').ok_or_else(|| format!("`{pair}` is not role=units (e.g. viewer=200000)"))?;
        let role: Role = role.trim().parse().map_err(|e| format!("`{pair}`: {e}"))?;
        let units: u64 =
            units.trim().parse().map_err(|_| format!("`{pair}`: the units must be a whole number above 0"))?;
        if units == 0 {
            return Err(format!("`{pair}`: the units must be a whole number above 0"));
        }
        rates.insert(role, units);
    }
    rates.entry(Role::Viewer).or_insert(200_000);
    Ok(RoleRates(rates))
}

/// The highest `max_request_body_bytes` accepted.
pub const MAX_REQUEST_BODY_BYTES_CEILING: usize = 64 * 1024 * 1024;

#[derive(Clone, Debug, Args)]
/// Every setting of `cmdb serve` (each also `CMDB_<NAME>`; flags win).
pub struct ServeSettings {
    /// Address to listen on (host:port; port 0 picks a free one).
    #[arg(long, env = "CMDB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Load the demo estate (584 CIs, six months of history ending now, changes in the coming
    /// weeks) into an empty data directory;
    /// start normally on one that already holds it; refuse any other.
    #[arg(long, env = "CMDB_DEMO")]
    pub demo: bool,

    /// Serve queries and subscriptions only (a follower of a shared log): every mutation is
    /// refused with READ_ONLY, naming --writes-go-to.
    #[arg(long, env = "CMDB_READ_ONLY")]
    pub read_only: bool,

    /// Where a read-only follower tells clients to send writes (the writers' URL or load
    /// balancer).
    #[arg(long, env = "CMDB_WRITES_GO_TO")]
    pub writes_go_to: Option<String>,

    /// How often projections save a checkpoint, in milliseconds.
    #[arg(long, env = "CMDB_CHECKPOINT_INTERVAL_MS", default_value_t = 30_000)]
    pub checkpoint_interval_ms: u64,

    /// The checkpoint signing key (a file written by `cmdb key create`, kept outside the log).
    /// Without one no checkpoint is signed; under --demo one is created in the data directory.
    #[arg(long, env = "CMDB_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,

    /// Sign a checkpoint once this many events are not covered by the last one.
    #[arg(long, env = "CMDB_SIGN_EVERY_EVENTS", default_value_t = 1000)]
    pub sign_every_events: u64,

    /// Sign a checkpoint at least this often, in milliseconds, when the log grew.
    #[arg(long, env = "CMDB_SIGN_EVERY_MS", default_value_t = 60_000)]
    pub sign_every_ms: u64,

    /// Do not create and print an admin token when the data directory is new.
    #[arg(long, env = "CMDB_NO_BOOTSTRAP_TOKEN")]
    pub no_bootstrap_token: bool,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "CMDB_MAX_REQUEST_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_request_body_bytes: usize,

    /// Deepest GraphQL selection set accepted.
    #[arg(long, env = "CMDB_MAX_QUERY_DEPTH", default_value_t = 16)]
    pub max_query_depth: usize,

    /// Highest worst-case cost of a GraphQL request, summed over a batch: each field costs 1,
    /// a list its page size (`first`, or `max_page_size` when absent, or the bound its domain
    /// puts on its length) times its children; aliases, fragments and introspection count.
    #[arg(long, env = "CMDB_MAX_QUERY_COMPLEXITY", default_value_t = 10_000_000)]
    pub max_query_complexity: usize,

    /// Most fields a GraphQL request's text may expand to once its fragments are spread.
    #[arg(long, env = "CMDB_MAX_QUERY_FIELDS", default_value_t = 10_000)]
    pub max_query_fields: usize,

    /// Most operations in one batched GraphQL request (a JSON array of requests).
    #[arg(long, env = "CMDB_MAX_BATCH_OPERATIONS", default_value_t = 16)]
    pub max_batch_operations: usize,

    /// Largest GraphQL answer, in bytes; a request whose answer grows past it fails with
    /// LIMIT_EXCEEDED instead of being held in memory.
    #[arg(long, env = "CMDB_MAX_RESPONSE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_response_bytes: usize,

    /// Cost units per second a token may spend, by role (a caller gets its best role's):
    /// `role=units` pairs, comma-separated; roles not named get the `viewer` rate.
    #[arg(long, env = "CMDB_COST_PER_SECOND", default_value = DEFAULT_COST_PER_SECOND, value_parser = parse_role_rates)]
    pub cost_per_second: RoleRates,

    /// Seconds of its rate a token's budget holds when it has been idle.
    #[arg(long, env = "CMDB_COST_BURST_SECONDS", default_value_t = 5)]
    pub cost_burst_seconds: u64,

    /// Largest page (`first`) a list field returns.
    #[arg(long, env = "CMDB_MAX_PAGE_SIZE", default_value_t = 1000)]
    pub max_page_size: usize,

    /// Most events a filtered page scans before it returns what it found with a cursor.
    #[arg(long, env = "CMDB_MAX_SCAN_EVENTS", default_value_t = 100_000)]
    pub max_scan_events: usize,

    /// Most concurrent subscriptions on one WebSocket connection.
    #[arg(long, env = "CMDB_MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = 16)]
    pub max_subscriptions_per_connection: usize,

    /// Most concurrent client connections (HTTP and WebSocket); more get 503.
    #[arg(long, env = "CMDB_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Most connections from one client address that have not shown a valid token yet; past
    /// it, that address's oldest such connection is closed to make room.
    #[arg(long, env = "CMDB_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 64)]
    pub max_connections_per_address: usize,

    /// Connections kept for requests with a valid token (at most half of `max_connections`):
    /// connections without one hold at most `max_connections` minus these; past that (or past
    /// `max_connections_per_address`) the oldest of them is closed to make room.
    #[arg(long, env = "CMDB_RESERVED_AUTHENTICATED_CONNECTIONS", default_value_t = 256)]
    pub reserved_authenticated_connections: usize,

    /// Time a client has to send a request's headers, in milliseconds. The clock starts when
    /// the connection begins waiting for a request, so it also closes idle keep-alive
    /// connections.
    #[arg(long, env = "CMDB_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// Time allowed for one HTTP request, in milliseconds.
    #[arg(long, env = "CMDB_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Time a WebSocket client has to send `connection_init`, in milliseconds.
    #[arg(long, env = "CMDB_WS_INIT_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_init_timeout_ms: u64,

    /// Time allowed to finish in-flight requests at shutdown, in milliseconds.
    #[arg(long, env = "CMDB_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// Longest a request waits for projections to reach a `minPosition`, in milliseconds.
    #[arg(long, env = "CMDB_MIN_POSITION_WAIT_MS", default_value_t = 5_000)]
    pub min_position_wait_ms: u64,

    /// Days after a release's first deployment in which linked incidents count for its
    /// post-release review (RL-7), 1 to 366.
    #[arg(long, env = "CMDB_RELEASE_REVIEW_DAYS", default_value_t = 14)]
    pub release_review_days: u32,

    /// Hours within which a retrospective emergency change must be approved, and any emergency
    /// change reviewed once implemented (CH-8).
    #[arg(long, env = "CMDB_EMERGENCY_REVIEW_DEADLINE_HOURS", default_value_t = cmdb_core::change::DEFAULT_EMERGENCY_REVIEW_DEADLINE_HOURS)]
    pub emergency_review_deadline_hours: u32,

    /// Days of failed and backed-out changes a risk assessment counts (CH-2).
    #[arg(long, env = "CMDB_RISK_HISTORY_DAYS", default_value_t = cmdb_core::change::risk::DEFAULT_RISK_HISTORY_DAYS)]
    pub risk_history_days: u32,

    /// Whether freeze windows block standard changes as they block normal ones (CH-5).
    #[arg(long, env = "CMDB_FREEZE_BLOCKS_STANDARD", default_value_t = true, action = clap::ArgAction::Set)]
    pub freeze_blocks_standard: bool,

    /// Impact-propagating hops within which two overlapping changes conflict (CH-5).
    #[arg(long, env = "CMDB_CONFLICT_MAX_DEPTH", default_value_t = cmdb_projections::calendar::DEFAULT_CONFLICT_MAX_DEPTH)]
    pub conflict_max_depth: u32,

    /// The secret GitHub signs webhook deliveries with (X-Hub-Signature-256); without it
    /// `/hooks/github` answers 503. Prefer the variable to the flag (a flag shows in `ps`).
    #[arg(long, env = "CMDB_GITHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub github_webhook_secret: Option<Secret>,

    /// The principal GitHub deliveries act as: it must exist and hold the deployer role.
    #[arg(long, env = "CMDB_GITHUB_HOOK_PRINCIPAL", default_value = "github")]
    pub github_hook_principal: String,

    /// Hours after a change's deployment (or implementation) in which an incident on one of
    /// its CIs counts as following it in `changeReport` (CH-10), 1 to 8,760.
    #[arg(long, env = "CMDB_INCIDENT_LINK_HOURS", default_value_t = cmdb_projections::reports::DEFAULT_INCIDENT_LINK_HOURS)]
    pub incident_link_hours: u32,

    /// GitHub's API (protection-rule callbacks and installation tokens go there; a callback
    /// URL elsewhere is refused).
    #[arg(long, env = "CMDB_GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,

    /// The GitHub App the engine answers deployment protection rules as (with
    /// --github-app-private-key-file).
    #[arg(long, env = "CMDB_GITHUB_APP_ID")]
    pub github_app_id: Option<u64>,

    /// The GitHub App's private key (PEM), for the RS256 JWT that buys installation tokens.
    #[arg(long, env = "CMDB_GITHUB_APP_PRIVATE_KEY_FILE")]
    pub github_app_private_key_file: Option<std::path::PathBuf>,

    /// A token to answer protection rules with, instead of a GitHub App.
    #[arg(long, env = "CMDB_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<Secret>,

    /// Where the engine's facts go as CDEvents: NAME=URL, repeatable (the variable: a comma-
    /// separated list). Each target's progress is recorded in the log (`outbound-NAME`).
    #[arg(long = "cdevents-target", env = "CMDB_CDEVENTS_TARGETS", value_delimiter = ',')]
    pub cdevents_targets: Vec<Target>,

    /// A bearer token sent with every outbound CDEvent.
    #[arg(long, env = "CMDB_CDEVENTS_TARGET_TOKEN", hide_env_values = true)]
    pub cdevents_target_token: Option<Secret>,

    /// Attempts per outbound fact before it is dead-lettered, 1 to 100.
    #[arg(long, env = "CMDB_OUTBOUND_MAX_ATTEMPTS", default_value_t = 6)]
    pub outbound_max_attempts: u32,

    /// The first wait between two attempts, in milliseconds (doubled after each failure, at
    /// most a minute).
    #[arg(long, env = "CMDB_OUTBOUND_BACKOFF_MS", default_value_t = 500)]
    pub outbound_backoff_ms: u64,

    /// Deliveries accepted per second from one source (a GitHub repository, a CDEvents
    /// token's principal), with a burst of twice as many; past it, 429 with Retry-After.
    #[arg(long, env = "CMDB_HOOK_DELIVERIES_PER_SECOND", default_value_t = 1_000)]
    pub hook_deliveries_per_second: u32,

    /// A browser origin (`https://dashboard.example.com`, scheme, host and port only) whose
    /// pages may call the API across origins (CORS), repeatable (the variable: a comma-separated
    /// list); `*` allows any origin. Default: none. Credentials (cookies) are never allowed:
    /// a page sends its token in `Authorization`.
    #[arg(long = "cors-allow-origin", env = "CMDB_CORS_ALLOW_ORIGINS", value_delimiter = ',')]
    pub cors_allow_origins: Vec<CorsOrigin>,
}

/// Most origins `--cors-allow-origin` may list.
pub const MAX_CORS_ORIGINS: usize = 64;

/// An origin allowed to call the API from a browser: `*`, or `scheme://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigin {
    /// Any origin.
    Any,
    /// Exactly this origin, as browsers send it in `Origin`.
    Exact(String),
}

impl std::str::FromStr for CorsOrigin {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text == "*" {
            return Ok(CorsOrigin::Any);
        }
        let refuse = |why: &str| {
            format!("cors origin {text:?} {why}; write it as scheme://host[:port], e.g. https://dashboard.example.com")
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| refuse("has no scheme"))?;
        if scheme != "http" && scheme != "https" {
            return Err(refuse("is not http or https"));
        }
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(refuse("must have a host and nothing after it (no path, not even a trailing /)"));
        }
        if rest.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(refuse("must be lowercase, as browsers send it"));
        }
        let after_host = match rest.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map(|(_, after)| after).ok_or_else(|| refuse("has an unclosed ["))?,
            None => rest.split_once(':').map_or("", |(_, port)| port),
        };
        let port = after_host.strip_prefix(':').unwrap_or(after_host);
        if !port.is_empty() && port.parse::<u16>().is_err() {
            return Err(refuse("has a port that is not a number from 0 to 65535"));
        }
        Ok(CorsOrigin::Exact(text.to_owned()))
    }
}

/// A webhook target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its name (its stream is `outbound-<name>`).
    pub name: String,
    /// Where facts are POSTed.
    pub url: String,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, url) = text.split_once('=').ok_or("a target is NAME=URL")?;
        if !cmdb_core::outbound::valid_target_name(name) {
            return Err(format!("{name:?} is not a target name: 1 to 64 letters, digits, - and _"));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        }
        Ok(Target { name: name.to_owned(), url: url.to_owned() })
    }
}

/// A secret setting: never printed (its Debug is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() < MIN_WEBHOOK_SECRET_BYTES {
            return Err(format!("a webhook secret has at least {MIN_WEBHOOK_SECRET_BYTES} bytes"));
        }
        Ok(Secret(text.to_owned()))
    }
}

/// Shortest webhook secret accepted, in bytes.
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 16;
/// Most deliveries per second per source that may be configured.
pub const MAX_HOOK_DELIVERIES_PER_SECOND: usize = 1_000_000;

impl ServeSettings {
    /// Checks every setting; the message names the setting, its value and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        let range = |name: &str, value: usize, low: usize, high: usize| {
            if value < low || value > high {
                Err(format!("{name} is {value}; it must be between {low} and {high}"))
            } else {
                Ok(())
            }
        };
        range("max_request_body_bytes", self.max_request_body_bytes, 1024, MAX_REQUEST_BODY_BYTES_CEILING)?;
        if self.read_only && self.demo {
            return Err("--demo loads an estate and --read-only writes nothing: start the demo on a writer".into());
        }
        if self.writes_go_to.is_some() && !self.read_only {
            return Err("--writes-go-to is for a --read-only follower".into());
        }
        range("max_query_depth", self.max_query_depth, 2, 256)?;
        range("release_review_days", self.release_review_days as usize, 1, 366)?;
        if self.github_app_id.is_some() != self.github_app_private_key_file.is_some() {
            return Err("give github_app_id and github_app_private_key_file together".into());
        }
        if !(self.github_api_url.starts_with("https://") || self.github_api_url.starts_with("http://")) {
            return Err(format!("github_api_url {:?} is not an http(s) URL", self.github_api_url));
        }
        range("outbound_max_attempts", self.outbound_max_attempts as usize, 1, 100)?;
        range("outbound_backoff_ms", self.outbound_backoff_ms as usize, 1, 60_000)?;
        let mut names = std::collections::BTreeSet::new();
        if let Some(twice) = self.cdevents_targets.iter().find(|t| !names.insert(t.name.as_str())) {
            return Err(format!("cdevents target {} is named twice", twice.name));
        }
        range("cors_allow_origins (how many)", self.cors_allow_origins.len(), 0, MAX_CORS_ORIGINS)?;
        range(
            "incident_link_hours",
            self.incident_link_hours as usize,
            1,
            cmdb_projections::reports::MAX_INCIDENT_LINK_HOURS as usize,
        )?;
        range(
            "hook_deliveries_per_second",
            self.hook_deliveries_per_second as usize,
            1,
            MAX_HOOK_DELIVERIES_PER_SECOND,
        )?;
        range("max_query_complexity", self.max_query_complexity, 10, 1_000_000_000)?;
        range("max_page_size", self.max_page_size, 1, MAX_PAGE_SIZE_CEILING)?;
        range("max_query_fields", self.max_query_fields, 10, 1_000_000)?;
        range("max_batch_operations", self.max_batch_operations, 1, 1_000)?;
        range("max_response_bytes", self.max_response_bytes, 1024, MAX_RESPONSE_BYTES_CEILING)?;
        range("cost_burst_seconds", self.cost_burst_seconds as usize, 1, 3_600)?;
        for (role, rate) in self.cost_per_second.iter() {
            range(&format!("cost_per_second for {role}"), rate as usize, 1, 1_000_000_000)?;
        }
        range("max_connections_per_address", self.max_connections_per_address, 1, 1_000_000)?;
        range("reserved_authenticated_connections", self.reserved_authenticated_connections, 0, 1_000_000)?;
        range("max_scan_events", self.max_scan_events, self.max_page_size, 10_000_000)?;
        range("max_subscriptions_per_connection", self.max_subscriptions_per_connection, 1, 1024)?;
        range("max_connections", self.max_connections, 1, 1_000_000)?;
        let millis = |name: &str, value: u64| {
            if value == 0 || value > 3_600_000 {
                Err(format!("{name} is {value}; it must be between 1 and 3600000 milliseconds"))
            } else {
                Ok(())
            }
        };
        millis("request_timeout_ms", self.request_timeout_ms)?;
        millis("ws_init_timeout_ms", self.ws_init_timeout_ms)?;
        millis("header_read_timeout_ms", self.header_read_timeout_ms)?;
        millis("shutdown_grace_ms", self.shutdown_grace_ms)?;
        millis("min_position_wait_ms", self.min_position_wait_ms)?;
        millis("checkpoint_interval_ms", self.checkpoint_interval_ms)?;
        millis("sign_every_ms", self.sign_every_ms)?;
        range("sign_every_events", usize::try_from(self.sign_every_events).unwrap_or(usize::MAX), 1, 10_000_000)?;
        range(
            "emergency_review_deadline_hours",
            self.emergency_review_deadline_hours as usize,
            1,
            cmdb_core::change::MAX_EMERGENCY_REVIEW_DEADLINE_HOURS as usize,
        )?;
        range(
            "conflict_max_depth",
            self.conflict_max_depth as usize,
            1,
            cmdb_projections::calendar::MAX_CONFLICT_DEPTH as usize,
        )?;
        range(
            "risk_history_days",
            self.risk_history_days as usize,
            1,
            cmdb_core::change::risk::MAX_RISK_HISTORY_DAYS as usize,
        )?;
        Ok(())
    }
}

/// Where the data lives; shared by every command.
#[derive(Clone, Debug, Args)]
pub struct DataDir {
    /// The data directory: the embedded log and local state.
    #[arg(long, env = "CMDB_DATA_DIR", default_value = "./cmdb-data", global = true)]
    pub data_dir: PathBuf,

    /// Where the event log lives: sqlite:PATH (a data directory; default: the embedded log in
    /// --data-dir) or a postgres:// URL (one log shared by several servers).
    /// (Parsed after clap, so that a refused URL's password is never echoed.)
    #[arg(long, env = "CMDB_STORE", global = true, hide_env_values = true)]
    pub store: Option<String>,
}

impl DataDir {
    /// Where the log lives: `--store`, or the embedded log in the data directory.
    pub fn location(
        &self,
    ) -> Result<cmdb_core::store::location::StoreLocation, cmdb_core::store::location::LocationError> {
        match &self.store {
            Some(text) => text.parse(),
            None => Ok(cmdb_core::store::location::StoreLocation::Sqlite(self.data_dir.clone())),
        }
    }
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            demo: false,
            read_only: false,
            writes_go_to: None,
            checkpoint_interval_ms: 30_000,
            signing_key: None,
            sign_every_events: 1000,
            sign_every_ms: 60_000,
            no_bootstrap_token: false,
            max_request_body_bytes: 1024 * 1024,
            max_query_depth: 16,
            max_query_complexity: 10_000_000,
            max_query_fields: 10_000,
            max_batch_operations: 16,
            max_response_bytes: 32 * 1024 * 1024,
            cost_per_second: parse_role_rates(DEFAULT_COST_PER_SECOND).unwrap_or_default(),
            cost_burst_seconds: 5,
            max_connections_per_address: 64,
            reserved_authenticated_connections: 256,
            header_read_timeout_ms: 10_000,
            max_page_size: 1000,
            max_scan_events: 100_000,
            max_subscriptions_per_connection: 16,
            max_connections: 1024,
            request_timeout_ms: 30_000,
            ws_init_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            min_position_wait_ms: 5_000,
            release_review_days: 14,
            emergency_review_deadline_hours: cmdb_core::change::DEFAULT_EMERGENCY_REVIEW_DEADLINE_HOURS,
            risk_history_days: cmdb_core::change::risk::DEFAULT_RISK_HISTORY_DAYS,
            freeze_blocks_standard: true,
            conflict_max_depth: cmdb_projections::calendar::DEFAULT_CONFLICT_MAX_DEPTH,
            github_webhook_secret: None,
            cdevents_targets: Vec::new(),
            github_api_url: "https://api.github.com".to_owned(),
            github_app_id: None,
            github_app_private_key_file: None,
            github_token: None,
            cdevents_target_token: None,
            outbound_max_attempts: 6,
            outbound_backoff_ms: 500,
            incident_link_hours: cmdb_projections::reports::DEFAULT_INCIDENT_LINK_HOURS,
            github_hook_principal: "github".to_owned(),
            hook_deliveries_per_second: 1_000,
            cors_allow_origins: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_bound_is_checked_at_and_past_it() {
        assert_eq!(ServeSettings::default().validate(), Ok(()));
        let at = ServeSettings {
            max_page_size: MAX_PAGE_SIZE_CEILING,
            max_scan_events: MAX_PAGE_SIZE_CEILING,
            ..Default::default()
        };
        assert_eq!(at.validate(), Ok(()));
        let past = ServeSettings { max_page_size: MAX_PAGE_SIZE_CEILING + 1, ..Default::default() };
        let message = past.validate().expect_err("past the ceiling");
        assert!(message.contains("max_page_size is 10001"), "{message}");
        let zero = ServeSettings { max_connections: 0, ..Default::default() };
        assert!(zero.validate().expect_err("zero").contains("max_connections"));
        let zero = ServeSettings { request_timeout_ms: 0, ..Default::default() };
        assert!(zero.validate().expect_err("zero").contains("request_timeout_ms"));
        let tiny = ServeSettings { max_request_body_bytes: 10, ..Default::default() };
        assert!(tiny.validate().expect_err("tiny").contains("max_request_body_bytes"));
        let bound = cmdb_core::change::MAX_EMERGENCY_REVIEW_DEADLINE_HOURS;
        let at = ServeSettings { emergency_review_deadline_hours: bound, ..Default::default() };
        assert_eq!(at.validate(), Ok(()));
        for hours in [0, bound + 1] {
            let past = ServeSettings { emergency_review_deadline_hours: hours, ..Default::default() };
            assert!(past.validate().expect_err("out of range").contains("emergency_review_deadline_hours"));
        }
        let bound = cmdb_projections::calendar::MAX_CONFLICT_DEPTH;
        assert_eq!(ServeSettings { conflict_max_depth: bound, ..Default::default() }.validate(), Ok(()));
        for depth in [0, bound + 1] {
            let past = ServeSettings { conflict_max_depth: depth, ..Default::default() };
            assert!(past.validate().expect_err("out of range").contains("conflict_max_depth"));
        }
        let bound = cmdb_core::change::risk::MAX_RISK_HISTORY_DAYS;
        assert_eq!(ServeSettings { risk_history_days: bound, ..Default::default() }.validate(), Ok(()));
        for days in [0, bound + 1] {
            let past = ServeSettings { risk_history_days: days, ..Default::default() };
            assert!(past.validate().expect_err("out of range").contains("risk_history_days"));
        }
    }

    #[test]
    fn cost_rates_by_role_parse_and_bad_ones_are_named() {
        let rates = parse_role_rates(DEFAULT_COST_PER_SECOND).expect("default");
        assert_eq!(rates.of(&[Role::Viewer].into_iter().collect()), 200_000);
        assert_eq!(rates.of(&[Role::Viewer, Role::Editor].into_iter().collect()), 400_000, "the best role's");
        let only_admin = parse_role_rates("admin=5").expect("valid");
        assert_eq!(only_admin.of(&[Role::Auditor].into_iter().collect()), 200_000, "unnamed roles get the viewer rate");
        for (bad, expected) in [
            ("viewer", "is not role=units"),
            ("nobody=5", "nobody"),
            ("viewer=0", "above 0"),
            ("viewer=-1", "above 0"),
            ("viewer=lots", "above 0"),
        ] {
            let message = parse_role_rates(bad).expect_err(bad);
            assert!(message.contains(expected), "{bad}: {message}");
        }
    }

    #[test]
    fn tooling_settings_are_checked_at_and_past_their_bounds() {
        assert!("ops=https://events.example.com/in".parse::<Target>().is_ok());
        for bad in ["ops", "ops=ftp://example.com", "not a name=http://example.com", "=http://example.com"] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
        assert!("short".parse::<Secret>().is_err(), "a webhook secret has at least 16 bytes");
        assert!(format!("{:?}", "0123456789abcdef".parse::<Secret>().expect("long enough")).contains("redacted"));
        let with = |f: fn(&mut ServeSettings)| {
            let mut settings = ServeSettings::default();
            f(&mut settings);
            settings.validate()
        };
        assert!(with(|s| s.outbound_max_attempts = 1).is_ok());
        assert!(with(|s| s.outbound_max_attempts = 100).is_ok());
        assert!(with(|s| s.outbound_max_attempts = 0).is_err());
        assert!(with(|s| s.outbound_max_attempts = 101).is_err());
        assert!(with(|s| s.incident_link_hours = cmdb_projections::reports::MAX_INCIDENT_LINK_HOURS).is_ok());
        assert!(with(|s| s.incident_link_hours = cmdb_projections::reports::MAX_INCIDENT_LINK_HOURS + 1).is_err());
        assert!(with(|s| s.incident_link_hours = 0).is_err());
        assert!(with(|s| s.hook_deliveries_per_second = 0).is_err());
        assert!(with(|s| s.github_app_id = Some(1)).is_err(), "an App id needs its key");
        assert!(with(|s| s.github_api_url = "ftp://github".into()).is_err());
        let twice = with(|s| {
            s.cdevents_targets = vec!["ops=http://a".parse().expect("target"), "ops=http://b".parse().expect("target")]
        });
        assert!(twice.is_err_and(|e| e.contains("named twice")));
        assert!(with(|s| s.cors_allow_origins = vec![CorsOrigin::Any; MAX_CORS_ORIGINS]).is_ok());
        let past = with(|s| s.cors_allow_origins = vec![CorsOrigin::Any; MAX_CORS_ORIGINS + 1]);
        assert!(past.is_err_and(|e| e.contains("cors_allow_origins")));
    }

    #[test]
    fn cors_origins_are_scheme_host_and_port_only() {
        for good in ["*", "https://dashboard.example.com", "http://localhost:3000", "http://[::1]:8080", "http://[::1]"]
        {
            assert!(good.parse::<CorsOrigin>().is_ok(), "{good}");
        }
        for bad in [
            "dashboard.example.com",
            "ftp://example.com",
            "https://example.com/",
            "https://example.com/path",
            "https://Example.com",
            "https://example.com:99999",
            "https://",
            "https://user@example.com",
        ] {
            assert!(bad.parse::<CorsOrigin>().is_err(), "{bad}");
        }
    }
}
