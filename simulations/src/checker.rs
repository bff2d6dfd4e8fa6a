//! The invariants a run must keep, checked from the outside: from what the
//! publishers were told ([`EventRecord`]s) and what every site applied (the
//! [`Journal`]), never from Raft's own view of itself.
//!
//! - **No acknowledged loss**: every publication acknowledged to its
//!   publisher is, at the end, applied with the same bytes at the same log
//!   index at every site (or covered by a snapshot the site installed).
//! - **One order**: no log index ever holds different commands at two sites,
//!   or at one site across a restart. Each site applies in increasing index
//!   order, so equal contents per index is the same order everywhere.
//! - **Progress after heal**: once the faults stop, a publication is
//!   acknowledged and every site applies it (see `Sim::heal_and_probe`).

use std::collections::BTreeMap;
use std::fmt;

use vomesh_mesh::types::NodeId;

use crate::journal::Journal;
use crate::sim::{EventOutcome, EventRecord};

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// An acknowledged publication is missing at a site.
    AckedLost { seq: u64, index: u64, site: NodeId },
    /// An acknowledged publication's index holds other bytes at a site.
    AckedReplaced { seq: u64, index: u64, site: NodeId },
    /// Two sites applied different commands at one index.
    Diverged { index: u64, sites: (NodeId, NodeId) },
    /// A site applied different commands at one index across a restart.
    Rewritten { index: u64, site: NodeId },
    /// The mesh did not recover after the heal.
    NoProgress(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::AckedLost { seq, index, site } => write!(
                f,
                "acknowledged event {seq} (index {index}) is missing at site {site}"
            ),
            Violation::AckedReplaced { seq, index, site } => write!(
                f,
                "acknowledged event {seq} (index {index}) holds other bytes at site {site}"
            ),
            Violation::Diverged { index, sites } => write!(
                f,
                "index {index} holds different commands at sites {} and {}",
                sites.0, sites.1
            ),
            Violation::Rewritten { index, site } => {
                write!(f, "site {site} applied two commands at index {index}")
            }
            Violation::NoProgress(why) => write!(f, "no progress after heal: {why}"),
        }
    }
}

/// Every violation in a run's observations (empty: the run is correct).
pub fn check(
    events: &[EventRecord],
    journal: &Journal,
    liveness: &Result<(), String>,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    let applied: BTreeMap<NodeId, BTreeMap<u64, u64>> = journal
        .applied
        .iter()
        .map(|(site, seq)| (*site, seq.iter().copied().collect()))
        .collect();
    let covered = |site: NodeId, index: u64| {
        journal
            .snapshots
            .get(&site)
            .is_some_and(|s| s.iter().any(|last| *last >= index))
    };
    for event in events {
        let EventOutcome::Acked { index, .. } = event.outcome else {
            continue;
        };
        for (site, log) in &applied {
            match log.get(&index) {
                Some(d) if *d == event.digest => {}
                Some(_) => violations.push(Violation::AckedReplaced {
                    seq: event.seq,
                    index,
                    site: *site,
                }),
                None if covered(*site, index) => {}
                None => violations.push(Violation::AckedLost {
                    seq: event.seq,
                    index,
                    site: *site,
                }),
            }
        }
    }
    let sites: Vec<_> = applied.iter().collect();
    for (i, (a, log_a)) in sites.iter().enumerate() {
        for (b, log_b) in &sites[i + 1..] {
            // The first index the two sites hold with different bytes.
            if let Some(index) = log_a
                .iter()
                .filter_map(|(index, d)| log_b.get(index).filter(|e| *e != d).map(|_| *index))
                .next()
            {
                violations.push(Violation::Diverged {
                    index,
                    sites: (**a, **b),
                });
            }
        }
    }
    violations.extend(
        journal
            .rewritten
            .iter()
            .map(|(site, index)| Violation::Rewritten {
                index: *index,
                site: *site,
            }),
    );
    if let Err(why) = liveness {
        violations.push(Violation::NoProgress(why.clone()));
    }
    violations
}
