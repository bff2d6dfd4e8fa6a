//! A history checker for the mesh's failure tests, in the spirit of
//! Jepsen's: clients record every publish attempt and its outcome, and every
//! subscriber what it received; after recovery the final archive of every
//! site (read with XEP-0313 queries) is checked against that history.
//!
//! What a correct mesh guarantees, and so what is checked:
//! - every acknowledged publish is committed, so it is in every site's
//!   archive once the sites have caught up (nothing *lost*);
//! - the log is one sequence: every site's archive is the same list of
//!   (archive id, item id, delay stamp), in strictly increasing archive id
//!   order (no *divergent* site, no *order violation*);
//! - a publish is one log entry: no item id (unique per attempt) appears
//!   twice (no *duplicate*), and nothing appears that nobody attempted;
//! - a publisher that waits for each acknowledgement sees its items
//!   committed in that order (real-time order: a later publish cannot get a
//!   smaller archive id);
//! - a subscriber is told only what was committed, with the archive id and
//!   stamp the archive has, in log order.
//!
//! A publish answered with an error or not answered at all (timeout, lost
//! connection) may be committed or not: Raft cannot tell a client whether an
//! entry that reached some followers will survive an election. Such an
//! attempt may appear at most once; [`Report::failed_committed`] counts the
//! errors that committed anyway.
//!
//! A lost acknowledged publish is further placed by when it was
//! acknowledged, as Jepsen does: before the first acknowledged publish that
//! survived (*prefix*: state lost from the start, as a site that forgot its
//! data), after the last one (*postfix*: the most recent writes, as a
//! missing fsync), or between survivors (*middle*). Each attempt carries its
//! start and answer times, from which [`recovery`] measures how long the
//! mesh took to acknowledge publishes again at every site after a fault.
//!
//! Order is checked by archive id (the Raft log index), never by the
//! publication stamp: a site whose wall clock jumped back stamps a later
//! item with an earlier time, and that is no violation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jid::BareJid;
use vomesh_broker::client::Client;
use vomesh_broker::commands::{archive_fin, archive_query_iq, archived_item};

/// Index of a site (a node of the test cluster).
pub type Site = usize;

/// What a publish attempt came to, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An IQ result: the service says the item is committed.
    Acknowledged,
    /// An IQ error saying the write did not happen (e.g. no leader).
    Failed(String),
    /// No answer (timeout, lost connection) or an answer saying the write
    /// may or may not have been committed.
    Indeterminate(String),
}

/// One publish attempt, with an item id used by no other attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Which client made it; a client makes its attempts one at a time.
    pub publisher: usize,
    pub site: Site,
    pub item_id: String,
    pub outcome: Outcome,
    /// When the publish was sent and when its outcome was known, in
    /// milliseconds since the [`Recorder`] was made ([`Recorder::now_ms`]).
    pub started_ms: u64,
    pub answered_ms: u64,
}

/// An item notification one subscriber session received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Which subscriber session (one connection) received it.
    pub subscriber: usize,
    pub site: Site,
    pub item_id: String,
    pub archive_id: Option<u64>,
    pub stamp: Option<String>,
}

/// One entry of a node's XEP-0313 archive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArchivedItem {
    pub archive_id: u64,
    pub item_id: String,
    pub stamp: Option<String>,
}

/// What the clients of a test saw, for one pubsub node.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub attempts: Vec<Attempt>,
    pub deliveries: Vec<Delivery>,
}

impl History {
    /// Writes the history as JSON lines (`attempts.jsonl`,
    /// `deliveries.jsonl`) into `dir`, for diagnosis of a failed run.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut attempts =
            std::io::BufWriter::new(std::fs::File::create(dir.join("attempts.jsonl"))?);
        for attempt in &self.attempts {
            let (outcome, detail) = match &attempt.outcome {
                Outcome::Acknowledged => ("ok", ""),
                Outcome::Failed(error) => ("fail", error.as_str()),
                Outcome::Indeterminate(error) => ("info", error.as_str()),
            };
            let line = serde_json::json!({
                "publisher": attempt.publisher,
                "site": attempt.site,
                "item": attempt.item_id,
                "outcome": outcome,
                "detail": detail,
                "started_ms": attempt.started_ms,
                "answered_ms": attempt.answered_ms,
            });
            writeln!(attempts, "{line}")?;
        }
        attempts.flush()?;
        let mut deliveries =
            std::io::BufWriter::new(std::fs::File::create(dir.join("deliveries.jsonl"))?);
        for delivery in &self.deliveries {
            let line = serde_json::json!({
                "subscriber": delivery.subscriber,
                "site": delivery.site,
                "item": delivery.item_id,
                "archive_id": delivery.archive_id,
                "stamp": delivery.stamp,
            });
            writeln!(deliveries, "{line}")?;
        }
        deliveries.flush()
    }
}

/// A history the clients of a test record into concurrently, with the clock
/// their attempts are timed on.
#[derive(Debug, Clone)]
pub struct Recorder {
    history: Arc<Mutex<History>>,
    started: Instant,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            history: Arc::default(),
            started: Instant::now(),
        }
    }
}

impl Recorder {
    pub fn attempt(&self, attempt: Attempt) {
        self.lock().attempts.push(attempt);
    }

    /// Milliseconds since the recorder was made (monotonic).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn delivery(&self, delivery: Delivery) {
        self.lock().deliveries.push(delivery);
    }

    /// A copy of what was recorded so far.
    pub fn history(&self) -> History {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The outcome of [`check`]: counts of each anomaly, and a line for each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub attempted: usize,
    pub acknowledged: usize,
    pub failed: usize,
    pub indeterminate: usize,
    /// Entries of the majority archive.
    pub committed: usize,
    /// Acknowledged items missing from at least one site's archive.
    pub lost: usize,
    /// [`Report::lost`] split by acknowledgement time: before the first
    /// surviving acknowledged item, between survivors, after the last one
    /// (all are prefix when none survived).
    pub lost_prefix: usize,
    pub lost_middle: usize,
    pub lost_postfix: usize,
    /// Extra copies of an item in one site's archive, or of a delivery to
    /// one subscriber session.
    pub duplicates: usize,
    /// Archive ids not increasing along a site's archive, a subscriber's
    /// deliveries, or a publisher's acknowledged attempts.
    pub order_violations: usize,
    /// The violations seen at each site: in its archive or by its
    /// subscribers (a publisher's are counted at the site it used).
    pub order_violations_by_site: BTreeMap<Site, usize>,
    /// Sites whose archive is not the one most sites have.
    pub divergent_nodes: usize,
    pub divergent_sites: Vec<Site>,
    /// Archived or delivered items that no client attempted.
    pub unattempted: usize,
    /// Deliveries of items not committed, or whose archive id or stamp is
    /// not the archive's.
    pub delivery_mismatches: usize,
    /// Publishes answered with an error that are committed nonetheless.
    pub failed_committed: usize,
    /// One line per anomaly found, for the failure message.
    pub problems: Vec<String>,
}

/// How many problem lines a report keeps (the counts keep counting).
const PROBLEM_LINES_MAX: usize = 50;

impl Report {
    fn order_violation(&mut self, site: Site, line: String) {
        self.order_violations += 1;
        *self.order_violations_by_site.entry(site).or_default() += 1;
        self.problem(line);
    }

    fn problem(&mut self, line: String) {
        if self.problems.len() < PROBLEM_LINES_MAX {
            self.problems.push(line);
        }
    }

    /// Whether the mesh kept every promise (see the module docs).
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.order_violations == 0
            && self.divergent_nodes == 0
            && self.unattempted == 0
            && self.delivery_mismatches == 0
    }

    /// Panics with the report unless [`Report::is_clean`].
    pub fn assert_clean(&self) {
        assert!(self.is_clean(), "the history is not correct: {self:#?}");
    }
}

/// Checks `history` against the final `archives` of every site.
pub fn check(history: &History, archives: &BTreeMap<Site, Vec<ArchivedItem>>) -> Report {
    let mut report = Report {
        attempted: history.attempts.len(),
        ..Report::default()
    };
    let mut attempts: HashMap<&str, &Attempt> = HashMap::new();
    for attempt in &history.attempts {
        match attempt.outcome {
            Outcome::Acknowledged => report.acknowledged += 1,
            Outcome::Failed(_) => report.failed += 1,
            Outcome::Indeterminate(_) => report.indeterminate += 1,
        }
        if attempts.insert(&attempt.item_id, attempt).is_some() {
            // The checker's premise: an item id names one attempt.
            panic!("item id {} was attempted twice", attempt.item_id);
        }
    }

    // Each site on its own: increasing ids, no duplicates, nothing invented.
    for (site, archive) in archives {
        let mut seen = HashSet::new();
        for pair in archive.windows(2) {
            if pair[1].archive_id <= pair[0].archive_id {
                report.order_violation(
                    *site,
                    format!(
                        "site {site}: archive id {} follows {}",
                        pair[1].archive_id, pair[0].archive_id
                    ),
                );
            }
        }
        for item in archive {
            if !seen.insert(item.item_id.as_str()) {
                report.duplicates += 1;
                report.problem(format!("site {site}: item {} archived twice", item.item_id));
            }
            if !attempts.contains_key(item.item_id.as_str()) {
                report.unattempted += 1;
                report.problem(format!(
                    "site {site}: item {} archived but never attempted",
                    item.item_id
                ));
            }
        }
    }

    // All sites together: one sequence, the one most sites have.
    let mut counts: HashMap<&[ArchivedItem], usize> = HashMap::new();
    for archive in archives.values() {
        *counts.entry(archive.as_slice()).or_default() += 1;
    }
    let reference: &[ArchivedItem] = counts
        .iter()
        .max_by_key(|(archive, count)| (**count, archive.len()))
        .map(|(archive, _)| *archive)
        .unwrap_or(&[]);
    report.committed = reference.len();
    for (site, archive) in archives {
        if archive.as_slice() != reference {
            report.divergent_nodes += 1;
            report.divergent_sites.push(*site);
            let first_difference = archive
                .iter()
                .zip(reference)
                .position(|(a, b)| a != b)
                .unwrap_or(archive.len().min(reference.len()));
            report.problem(format!(
                "site {site} diverges at position {first_difference}: {:?} instead of {:?} \
                 ({} entries, the majority has {})",
                archive.get(first_difference),
                reference.get(first_difference),
                archive.len(),
                reference.len()
            ));
        }
    }

    // Acknowledged means committed: present at every site.
    let per_site: BTreeMap<Site, HashMap<&str, &ArchivedItem>> = archives
        .iter()
        .map(|(site, archive)| {
            (
                *site,
                archive.iter().map(|i| (i.item_id.as_str(), i)).collect(),
            )
        })
        .collect();
    let committed: HashMap<&str, &ArchivedItem> = reference
        .iter()
        .map(|item| (item.item_id.as_str(), item))
        .collect();
    let mut lost_at_ms = Vec::new();
    for attempt in &history.attempts {
        let missing_at: Vec<Site> = per_site
            .iter()
            .filter(|(_, items)| !items.contains_key(attempt.item_id.as_str()))
            .map(|(site, _)| *site)
            .collect();
        match &attempt.outcome {
            Outcome::Acknowledged if !missing_at.is_empty() => {
                report.lost += 1;
                lost_at_ms.push(attempt.answered_ms);
                report.problem(format!(
                    "acknowledged item {} (publisher {}, site {}) missing at sites {missing_at:?}",
                    attempt.item_id, attempt.publisher, attempt.site
                ));
            }
            Outcome::Failed(error) if committed.contains_key(attempt.item_id.as_str()) => {
                report.failed_committed += 1;
                report.problem(format!(
                    "item {} was refused ({error}) yet committed",
                    attempt.item_id
                ));
            }
            _ => {}
        }
    }

    let survivors_ms = history
        .attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Acknowledged && !lost_at_ms.is_empty())
        .filter(|a| {
            per_site
                .values()
                .all(|items| items.contains_key(a.item_id.as_str()))
        })
        .map(|a| a.answered_ms);
    let (first_survivor, last_survivor) = survivors_ms.fold((None, None), |(lo, hi), at| {
        (
            Some(lo.map_or(at, |lo: u64| lo.min(at))),
            Some(hi.map_or(at, |hi: u64| hi.max(at))),
        )
    });
    for at in lost_at_ms {
        match (first_survivor, last_survivor) {
            (Some(first), _) if at < first => report.lost_prefix += 1,
            (_, Some(last)) if at > last => report.lost_postfix += 1,
            (Some(_), Some(_)) => report.lost_middle += 1,
            _ => report.lost_prefix += 1,
        }
    }

    // Real-time order: a publisher's acknowledged items commit in the order
    // it published them (it waited for each acknowledgement).
    let mut last_acknowledged: HashMap<usize, (u64, &str)> = HashMap::new();
    for attempt in &history.attempts {
        if attempt.outcome != Outcome::Acknowledged {
            continue;
        }
        let Some(item) = committed.get(attempt.item_id.as_str()) else {
            continue;
        };
        if let Some((previous, previous_id)) = last_acknowledged.get(&attempt.publisher)
            && item.archive_id <= *previous
        {
            report.order_violation(
                attempt.site,
                format!(
                    "publisher {}: {} (archive id {}) acknowledged after {previous_id} ({previous})",
                    attempt.publisher, attempt.item_id, item.archive_id
                ),
            );
        }
        last_acknowledged.insert(attempt.publisher, (item.archive_id, &attempt.item_id));
    }

    // Subscribers: told only what is committed, as it is archived, in order.
    let mut delivered: HashSet<(usize, &str)> = HashSet::new();
    let mut last_delivered: HashMap<usize, u64> = HashMap::new();
    for delivery in &history.deliveries {
        let who = format!(
            "subscriber {} at site {}",
            delivery.subscriber, delivery.site
        );
        if !delivered.insert((delivery.subscriber, &delivery.item_id)) {
            report.duplicates += 1;
            report.problem(format!("{who} received {} twice", delivery.item_id));
        }
        if !attempts.contains_key(delivery.item_id.as_str()) {
            report.unattempted += 1;
            report.problem(format!(
                "{who} received {}, never attempted",
                delivery.item_id
            ));
            continue;
        }
        let Some(item) = committed.get(delivery.item_id.as_str()) else {
            report.delivery_mismatches += 1;
            report.problem(format!(
                "{who} received {}, which is not committed",
                delivery.item_id
            ));
            continue;
        };
        if delivery.archive_id != Some(item.archive_id) || delivery.stamp != item.stamp {
            report.delivery_mismatches += 1;
            report.problem(format!(
                "{who} received {} as ({:?}, {:?}), archived as ({}, {:?})",
                delivery.item_id, delivery.archive_id, delivery.stamp, item.archive_id, item.stamp
            ));
        }
        if let Some(previous) = last_delivered.insert(delivery.subscriber, item.archive_id)
            && item.archive_id <= previous
        {
            report.order_violation(
                delivery.site,
                format!(
                    "{who} received archive id {} after {previous}",
                    item.archive_id
                ),
            );
        }
    }
    report
}

/// How long after `healed_ms` (a [`Recorder::now_ms`] time) the mesh
/// acknowledged publishes again at every one of `sites`: for each site the
/// first acknowledged publish sent after `healed_ms`, the latest of those
/// answers. `None` if a site acknowledged none.
pub fn recovery(history: &History, healed_ms: u64, sites: &[Site]) -> Option<Duration> {
    let mut latest = 0;
    for site in sites {
        let first = history
            .attempts
            .iter()
            .filter(|a| a.site == *site && a.started_ms >= healed_ms)
            .filter(|a| a.outcome == Outcome::Acknowledged)
            .map(|a| a.answered_ms)
            .min()?;
        latest = latest.max(first - healed_ms);
    }
    Some(Duration::from_millis(latest))
}

/// Reads the whole XEP-0313 archive of `node` at the site `client` is
/// connected to, in pages of `page_items` (XEP-0059 RSM `<after/>`).
pub async fn read_archive(
    client: &mut Client,
    service: &BareJid,
    node: &str,
    page_items: usize,
    reply_timeout: Duration,
) -> anyhow::Result<Vec<ArchivedItem>> {
    let mut items = Vec::new();
    // Archive ids are log indices, so 0 precedes them all.
    let mut after = "0".to_owned();
    for page in 0.. {
        let query_id = format!("audit-{page}");
        let reply = tokio::time::timeout(
            reply_timeout,
            client.iq(archive_query_iq(
                service, node, &query_id, &after, page_items,
            )),
        )
        .await??;
        // The results precede the IQ result on the stream (XEP-0313 §4.2),
        // so they are all queued by now; a zero timeout takes only those.
        while let Ok(message) = tokio::time::timeout(Duration::ZERO, client.next_stanza()).await {
            let Some(item) = archived_item(&message?, service, node, &query_id) else {
                continue;
            };
            let archive_id = item
                .archive_id
                .as_deref()
                .unwrap_or_default()
                .parse::<u64>()?;
            items.push(ArchivedItem {
                archive_id,
                item_id: item.item_id,
                stamp: item.stamp,
            });
        }
        let fin = archive_fin(&reply)?;
        match fin.last {
            Some(last) if !fin.complete => after = last,
            _ => break,
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(publisher: usize, item_id: &str, outcome: Outcome) -> Attempt {
        // Times from the item id's last character: "a" at 10 ms, "b" at 20…
        let at = u64::from(item_id.bytes().last().unwrap_or(b'a') - b'a' + 1) * 10;
        Attempt {
            publisher,
            site: publisher,
            item_id: item_id.to_owned(),
            outcome,
            started_ms: at - 5,
            answered_ms: at,
        }
    }

    fn archived(archive_id: u64, item_id: &str) -> ArchivedItem {
        ArchivedItem {
            archive_id,
            item_id: item_id.to_owned(),
            stamp: Some(format!("2026-11-25T12:00:{archive_id:02}Z")),
        }
    }

    fn delivery(subscriber: usize, item: &ArchivedItem) -> Delivery {
        Delivery {
            subscriber,
            site: subscriber,
            item_id: item.item_id.clone(),
            archive_id: Some(item.archive_id),
            stamp: item.stamp.clone(),
        }
    }

    /// Three acknowledged publishes by one publisher, archived at 3 sites
    /// and delivered to a subscriber at each.
    fn good() -> (History, BTreeMap<Site, Vec<ArchivedItem>>) {
        let archive = vec![archived(2, "a"), archived(3, "b"), archived(5, "c")];
        let history = History {
            attempts: ["a", "b", "c"]
                .iter()
                .map(|id| attempt(0, id, Outcome::Acknowledged))
                .collect(),
            deliveries: (0..3)
                .flat_map(|s| archive.iter().map(move |i| delivery(s, i)))
                .collect(),
        };
        let archives = (0..3).map(|site| (site, archive.clone())).collect();
        (history, archives)
    }

    #[test]
    fn a_correct_history_is_clean() {
        let (history, archives) = good();
        let report = check(&history, &archives);
        report.assert_clean();
        assert_eq!(report.acknowledged, 3);
        assert_eq!(report.committed, 3);
        assert!(report.problems.is_empty());
    }

    #[test]
    fn an_acknowledged_item_missing_everywhere_is_lost() {
        let (history, mut archives) = good();
        for archive in archives.values_mut() {
            archive.remove(1);
        }
        let report = check(&history, &archives);
        assert_eq!(report.lost, 1);
        assert_eq!(report.lost_middle, 1);
        assert_eq!(report.divergent_nodes, 0);
        // The subscribers were told of an item that is no longer committed.
        assert_eq!(report.delivery_mismatches, 3);
        assert!(!report.is_clean());
    }

    #[test]
    fn an_item_missing_at_one_site_is_lost_and_that_site_diverges() {
        let (history, mut archives) = good();
        archives.get_mut(&2).unwrap().pop();
        let report = check(&history, &archives);
        assert_eq!(report.lost, 1);
        assert_eq!(report.lost_postfix, 1);
        assert_eq!(report.divergent_nodes, 1);
        assert_eq!(report.divergent_sites, vec![2]);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("missing at sites [2]"))
        );
    }

    #[test]
    fn an_item_archived_twice_is_a_duplicate() {
        let (history, mut archives) = good();
        for archive in archives.values_mut() {
            archive.push(archived(6, "b"));
        }
        let report = check(&history, &archives);
        assert_eq!(report.duplicates, 3);
        assert_eq!(report.divergent_nodes, 0);
    }

    #[test]
    fn a_refused_publish_committed_twice_is_a_duplicate() {
        let (mut history, mut archives) = good();
        history.attempts.push(attempt(
            1,
            "d",
            Outcome::Failed("service-unavailable".into()),
        ));
        for archive in archives.values_mut() {
            archive.extend([archived(6, "d"), archived(7, "d")]);
        }
        let report = check(&history, &archives);
        assert_eq!(report.duplicates, 3);
        assert_eq!(report.failed_committed, 1);
        assert!(!report.is_clean());
    }

    #[test]
    fn an_indeterminate_publish_may_be_absent_or_committed_once() {
        let (mut history, archives) = good();
        history
            .attempts
            .push(attempt(1, "d", Outcome::Indeterminate("timeout".into())));
        check(&history, &archives).assert_clean();
        let mut with_d = archives.clone();
        for archive in with_d.values_mut() {
            archive.push(archived(6, "d"));
        }
        let report = check(&history, &with_d);
        report.assert_clean();
        assert_eq!(report.committed, 4);
    }

    #[test]
    fn sites_archiving_in_different_orders_diverge() {
        let (history, mut archives) = good();
        let site = archives.get_mut(&1).unwrap();
        site.swap(0, 1);
        let report = check(&history, &archives);
        assert_eq!(report.divergent_nodes, 1);
        // Site 1's ids now go 3, 2: out of order there.
        assert_eq!(report.order_violations, 1);
        assert_eq!(report.order_violations_by_site, BTreeMap::from([(1, 1)]));
    }

    #[test]
    fn a_reordering_of_a_publishers_acknowledged_items_is_detected() {
        let (mut history, archives) = good();
        // The publisher got "c" acknowledged before attempting "b".
        history.attempts.swap(1, 2);
        let report = check(&history, &archives);
        assert_eq!(report.order_violations, 1);
        assert!(report.problems[0].contains("publisher 0"));
    }

    #[test]
    fn different_stamps_for_one_archive_id_diverge() {
        let (history, mut archives) = good();
        archives.get_mut(&0).unwrap()[0].stamp = Some("2026-11-25T13:00:00Z".into());
        let report = check(&history, &archives);
        assert_eq!(report.divergent_nodes, 1);
    }

    #[test]
    fn an_item_nobody_published_is_detected() {
        let (history, mut archives) = good();
        for archive in archives.values_mut() {
            archive.push(archived(9, "ghost"));
        }
        let report = check(&history, &archives);
        assert_eq!(report.unattempted, 3);
    }

    #[test]
    fn deliveries_out_of_order_twice_or_with_another_id_are_detected() {
        let (mut history, archives) = good();
        let archive = &archives[&0];
        history.deliveries = vec![
            delivery(7, &archive[1]),
            delivery(7, &archive[0]),
            delivery(7, &archive[0]),
            Delivery {
                archive_id: Some(4),
                ..delivery(8, &archive[2])
            },
        ];
        let report = check(&history, &archives);
        assert_eq!(report.order_violations, 2);
        assert_eq!(report.duplicates, 1);
        assert_eq!(report.delivery_mismatches, 1);
    }

    #[test]
    fn the_first_lost_items_are_a_prefix() {
        let (history, mut archives) = good();
        for archive in archives.values_mut() {
            archive.remove(0);
        }
        let report = check(&history, &archives);
        assert_eq!((report.lost_prefix, report.lost_middle), (1, 0));
    }

    #[test]
    fn order_is_by_archive_id_not_by_stamp() {
        let (history, mut archives) = good();
        // A site's clock jumped back: the last item has the earliest stamp.
        for archive in archives.values_mut() {
            archive[2].stamp = Some("2026-11-25T11:00:00Z".into());
        }
        let mut history = history;
        for delivery in &mut history.deliveries {
            if delivery.item_id == "c" {
                delivery.stamp = Some("2026-11-25T11:00:00Z".into());
            }
        }
        check(&history, &archives).assert_clean();
    }

    #[test]
    fn recovery_is_the_first_acknowledgement_at_the_slowest_site() {
        let mut history = History::default();
        for (site, item, outcome) in [
            (0, "a", Outcome::Acknowledged),
            (1, "b", Outcome::Indeterminate("timeout".into())),
            (0, "c", Outcome::Acknowledged),
            (1, "d", Outcome::Acknowledged),
        ] {
            history.attempts.push(attempt(site, item, outcome));
        }
        // Healed at 12 ms: site 0 acknowledged "c" at 30, site 1 "d" at 40.
        assert_eq!(
            recovery(&history, 12, &[0, 1]),
            Some(Duration::from_millis(28))
        );
        assert_eq!(recovery(&history, 12, &[0, 1, 2]), None);
    }
}
