//! Scenario files: what to simulate, as versioned TOML.
//!
//! ```toml
//! version = 1
//! name = "steady-5"
//! description = "five sites, one event every two seconds"
//! seed = 1
//! sites = 5                    # the first N default sites (or [[site]] tables)
//! duration_s = 600
//! subscribers = 1000           # spread evenly over the sites
//!
//! [timeouts]                   # absent: MeshTimeouts::wan()
//! heartbeat_interval_ms = 600
//! election_timeout_min_ms = 3000
//! election_timeout_max_ms = 6000
//!
//! [raft]                       # absent: the production defaults
//! append_entries_max = 256
//!
//! [network]
//! jitter_ms = 10               # uniform extra one-way delay
//! loss = 0.001                 # per message; a loss costs a retransmission
//! bandwidth_mbps = 100         # per direction of each link
//!
//! [workload]
//! rate_per_s = 0.5             # steady publications, round robin over sites
//! bursts = [{ at_s = 60, events = 10000, over_s = 60 }]
//!
//! [[fault]]
//! at_s = 120
//! kind = "crash-leader"        # crash, restart, crash-leader, partition, heal, join
//! ```
//!
//! Unknown keys are an error: a typo must not silently run another
//! scenario. `version` says which schema the file follows; this build reads
//! [`SCENARIO_VERSION`] only.

use std::path::Path;

use serde::Deserialize;
use vomesh_mesh::config::MeshTimeouts;

use crate::sites::{Site, default_sites};

/// The schema version this build reads.
pub const SCENARIO_VERSION: u32 = 1;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub sites: SiteList,
    /// Sites (by name) that are not members at the start: they join with a
    /// `join` fault, as a learner that catches up and is then promoted.
    #[serde(default)]
    pub joining: Vec<String>,
    pub duration_s: f64,
    #[serde(default)]
    pub subscribers: u64,
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    #[serde(default)]
    pub raft: RaftLimits,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
}

fn default_seed() -> u64 {
    1
}

/// Either a count of default sites or explicit sites.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum SiteList {
    Count(usize),
    Explicit(Vec<Site>),
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl Timeouts {
    pub fn wan() -> Self {
        Self::from(&MeshTimeouts::wan())
    }

    /// The production timeouts with these three replaced.
    pub fn to_mesh(self) -> MeshTimeouts {
        MeshTimeouts {
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            ..MeshTimeouts::wan()
        }
    }
}

impl From<&MeshTimeouts> for Timeouts {
    fn from(t: &MeshTimeouts) -> Self {
        Self {
            heartbeat_interval_ms: t.heartbeat_interval_ms,
            election_timeout_min_ms: t.election_timeout_min_ms,
            election_timeout_max_ms: t.election_timeout_max_ms,
        }
    }
}

/// Batching and snapshot limits, defaulting to production's `MeshConfig`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftLimits {
    pub append_entries_max: u64,
    pub snapshot_every_entries: u64,
    pub log_entries_kept_after_snapshot: u64,
}

impl Default for RaftLimits {
    fn default() -> Self {
        Self {
            append_entries_max: 256,
            snapshot_every_entries: 10_000,
            log_entries_kept_after_snapshot: 1_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    pub jitter_ms: f64,
    pub loss: f64,
    pub bandwidth_mbps: f64,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            jitter_ms: 5.0,
            loss: 0.0,
            bandwidth_mbps: 100.0,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Steady publications per second, from each site in turn.
    pub rate_per_s: f64,
    pub bursts: Vec<Burst>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    pub at_s: f64,
    pub events: u64,
    pub over_s: f64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(try_from = "FaultEntry")]
pub struct Fault {
    pub at_s: f64,
    pub kind: FaultKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// The site loses power: its Raft stops, its disk (log, vote,
    /// snapshot) survives.
    Crash { site: String },
    /// Whatever site leads at that moment crashes.
    CrashLeader,
    /// A crashed site boots again from its disk.
    Restart { site: String },
    /// Every link of the site is cut.
    Partition { site: String },
    /// Every cut link is restored.
    Heal,
    /// A site of `joining` is added: learner, catch-up, then voter.
    Join { site: String },
}

/// A `[[fault]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultEntry {
    at_s: f64,
    kind: String,
    site: Option<String>,
}

impl TryFrom<FaultEntry> for Fault {
    type Error = String;

    fn try_from(entry: FaultEntry) -> Result<Self, String> {
        let FaultEntry { at_s, kind, site } = entry;
        let kind = match (kind.as_str(), site) {
            ("crash", Some(site)) => FaultKind::Crash { site },
            ("restart", Some(site)) => FaultKind::Restart { site },
            ("partition", Some(site)) => FaultKind::Partition { site },
            ("join", Some(site)) => FaultKind::Join { site },
            ("crash-leader", None) => FaultKind::CrashLeader,
            ("heal", None) => FaultKind::Heal,
            ("crash" | "restart" | "partition" | "join", None) => {
                return Err(format!("fault `{kind}` needs a `site`"));
            }
            ("crash-leader" | "heal", Some(_)) => {
                return Err(format!("fault `{kind}` takes no `site`"));
            }
            _ => {
                return Err(format!(
                    "unknown fault `{kind}` (crash, restart, crash-leader, partition, heal, join)"
                ));
            }
        };
        Ok(Fault { at_s, kind })
    }
}

/// A scenario file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    // The cause is part of the message, not an error source, so that a
    // report printing the chain says it once.
    #[error("{path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path}: {cause}")]
    Parse {
        path: String,
        cause: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| ScenarioError::Read {
            path: display.clone(),
            cause,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ScenarioError::Parse { cause, .. } => ScenarioError::Parse {
                path: display,
                cause,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|cause| ScenarioError::Parse {
            path: String::new(),
            cause,
        })?;
        scenario.check()?;
        Ok(scenario)
    }

    fn check(&self) -> Result<(), ScenarioError> {
        let invalid = |m: String| Err(ScenarioError::Invalid(m));
        if self.version != SCENARIO_VERSION {
            return invalid(format!(
                "scenario version {} is not supported (this build reads version {SCENARIO_VERSION})",
                self.version
            ));
        }
        let sites = self.site_list();
        if sites.is_empty() || sites.len() > 64 {
            return invalid(format!("{} sites: 1 to 64 are supported", sites.len()));
        }
        let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
        let known = |name: &str| names.contains(&name);
        for name in &self.joining {
            if !known(name) {
                return invalid(format!("joining site `{name}` is not one of the sites"));
            }
        }
        if self.joining.len() >= sites.len() {
            return invalid("at least one site must be a member from the start".into());
        }
        for fault in &self.faults {
            let site = match &fault.kind {
                FaultKind::Crash { site }
                | FaultKind::Restart { site }
                | FaultKind::Partition { site }
                | FaultKind::Join { site } => Some(site),
                FaultKind::CrashLeader | FaultKind::Heal => None,
            };
            if let Some(site) = site.filter(|s| !known(s)) {
                return invalid(format!("fault names unknown site `{site}`"));
            }
            if !(0.0..=self.duration_s).contains(&fault.at_s) {
                return invalid(format!("fault at {} s is outside the run", fault.at_s));
            }
        }
        if let Some(t) = self.timeouts
            && (t.heartbeat_interval_ms == 0
                || t.election_timeout_min_ms <= t.heartbeat_interval_ms
                || t.election_timeout_max_ms <= t.election_timeout_min_ms)
        {
            return invalid("timeouts need 0 < heartbeat < election min < election max".into());
        }
        if !(0.0..1.0).contains(&self.network.loss) || self.network.bandwidth_mbps <= 0.0 {
            return invalid("network: loss in [0, 1) and a positive bandwidth".into());
        }
        if self.workload.rate_per_s < 0.0 || self.duration_s <= 0.0 {
            return invalid("a positive duration and a non-negative rate".into());
        }
        Ok(())
    }

    /// The sites, in id order (site `i` in this list is node id `i + 1`).
    pub fn site_list(&self) -> Vec<Site> {
        match &self.sites {
            SiteList::Count(n) => default_sites().into_iter().take(*n).collect(),
            SiteList::Explicit(sites) => sites.clone(),
        }
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts.unwrap_or_else(Timeouts::wan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "version = 1\nname = \"t\"\nsites = 3\nduration_s = 10\n";

    #[test]
    fn minimal_scenario_takes_production_defaults() {
        let s = Scenario::parse(MINIMAL).unwrap();
        assert_eq!(s.site_list().len(), 3);
        assert_eq!(s.timeouts(), Timeouts::wan());
        assert_eq!(s.raft.append_entries_max, 256);
    }

    #[test]
    fn unknown_version_is_refused() {
        let text = MINIMAL.replace("version = 1", "version = 2");
        let err = Scenario::parse(&text).unwrap_err().to_string();
        assert!(err.contains("version 2 is not supported"), "{err}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let text = format!("{MINIMAL}sitez = 4\n");
        assert!(matches!(
            Scenario::parse(&text),
            Err(ScenarioError::Parse { .. })
        ));
    }

    #[test]
    fn unknown_key_in_a_fault_is_refused() {
        let text = format!("{MINIMAL}[[fault]]\nat_s = 1\nkind = \"heal\"\nsite = \"chile\"\n");
        assert!(Scenario::parse(&text).is_err());
    }

    #[test]
    fn fault_on_unknown_site_is_refused() {
        let text = format!("{MINIMAL}[[fault]]\nat_s = 1\nkind = \"crash\"\nsite = \"mars\"\n");
        let err = Scenario::parse(&text).unwrap_err().to_string();
        assert!(err.contains("unknown site `mars`"), "{err}");
    }
}
