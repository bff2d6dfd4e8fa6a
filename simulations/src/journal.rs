//! What every site did, as the simulation observes it from outside the code
//! under test: the commands each site's state machine applied (index and a
//! digest of the bytes), the snapshots it installed, and the first delivery
//! of each event to its subscribers. The checker and the report read it.
//!
//! [`SiteReplica`] wraps the broker's real [`Replica`] to record what it is
//! given; [`SiteDelivery`] is the broker's `Deliver` seam, counting the
//! recipients connected to its site instead of writing stanzas.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use vomesh_broker::pubsub::Notification;
use vomesh_broker::pubsub::model::Item;
use vomesh_broker::replica::{Deliver, Replica};
use vomesh_mesh::types::{CommittedCommand, NodeId, StateMachine};
use vomesh_proto::pubsub::Publish;

/// The first delivery of one event at one site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Virtual time since the start of the run.
    pub at: Duration,
    /// Subscribers of this site it reached.
    pub recipients: u64,
}

/// Everything observed in one run.
#[derive(Clone, Debug)]
pub struct Journal {
    epoch: Instant,
    /// Per site, the `(index, digest)` of each command applied, in order.
    /// A restarted site re-applies what follows its snapshot; those repeats
    /// are checked (same digest at the same index) but not recorded twice.
    pub applied: BTreeMap<NodeId, Vec<(u64, u64)>>,
    /// Per site, the last index of every snapshot it installed or restored.
    pub snapshots: BTreeMap<NodeId, Vec<u64>>,
    /// Per site, an index that was applied twice with different bytes.
    pub rewritten: Vec<(NodeId, u64)>,
    /// Per site, keyed by the event's publication time (microseconds, unique
    /// per event in a run).
    pub deliveries: BTreeMap<NodeId, BTreeMap<i64, Delivery>>,
}

/// The journal shared by every site of a run.
#[derive(Clone, Debug)]
pub struct SharedJournal(Arc<Mutex<Journal>>);

impl SharedJournal {
    pub fn new(epoch: Instant) -> Self {
        Self(Arc::new(Mutex::new(Journal {
            epoch,
            applied: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            rewritten: Vec::new(),
            deliveries: BTreeMap::new(),
        })))
    }

    pub fn lock(&self) -> MutexGuard<'_, Journal> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the journal's clock again: delivery times count from the
    /// start of the scenario, after the mesh was set up.
    pub fn restart_clock(&self) {
        self.lock().epoch = Instant::now();
    }
}

/// FNV-1a: a stable digest of a command's bytes (stable across runs and
/// builds, unlike the standard library's hasher).
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The broker's replica at one site, observed.
pub struct SiteReplica {
    site: NodeId,
    replica: Replica,
    journal: SharedJournal,
}

impl SiteReplica {
    pub fn new(site: NodeId, replica: Replica, journal: SharedJournal) -> Self {
        Self {
            site,
            replica,
            journal,
        }
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }
}

impl StateMachine for SiteReplica {
    type RestoreError = <Replica as StateMachine>::RestoreError;

    fn apply(&mut self, commands: Vec<CommittedCommand>) -> Vec<Bytes> {
        {
            let mut journal = self.journal.lock();
            let mut rewritten = Vec::new();
            let applied = journal.applied.entry(self.site).or_default();
            for c in &commands {
                let d = digest(&c.command);
                match applied.binary_search_by_key(&c.index, |(i, _)| *i) {
                    Ok(at) if applied[at].1 != d => rewritten.push((self.site, c.index)),
                    Ok(_) => {}
                    Err(at) if at == applied.len() => applied.push((c.index, d)),
                    // An index below the last applied one that this site
                    // never applied: it came with a snapshot. Nothing to add.
                    Err(_) => {}
                }
            }
            journal.rewritten.extend(rewritten);
        }
        self.replica.apply(commands)
    }

    fn snapshot(&self) -> Bytes {
        self.replica.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Self::RestoreError> {
        self.replica.restore(snapshot)?;
        let last = self.replica.pubsub().last_index();
        self.journal
            .lock()
            .snapshots
            .entry(self.site)
            .or_default()
            .push(last);
        Ok(())
    }
}

/// The subscribers connected to one site: `subscriber_prefix` is the start
/// of their account names (`s3-` for site 3).
pub struct SiteDelivery {
    pub site: NodeId,
    pub subscriber_prefix: String,
    pub journal: SharedJournal,
}

impl Deliver for SiteDelivery {
    fn deliver(&self, notification: &Notification, published_micros: i64) {
        let recipients = notification
            .recipients
            .iter()
            .filter(|jid| {
                jid.node()
                    .is_some_and(|n| n.as_str().starts_with(&self.subscriber_prefix))
            })
            .count() as u64;
        let mut journal = self.journal.lock();
        let at = journal.epoch.elapsed();
        // A restarted site re-applies (and re-notifies) the entries after
        // its snapshot; the first delivery is the one a subscriber saw.
        journal
            .deliveries
            .entry(self.site)
            .or_default()
            .entry(published_micros)
            .or_insert(Delivery { at, recipients });
    }

    /// The simulated sites have no VTP subscribers.
    fn published(&self, _publish: &Publish, _item: &Item) {}
}
