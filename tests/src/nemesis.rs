//! The nemesis: a randomised, seeded failover run of a mesh of real
//! processes, in the manner of Jepsen. Publishers at every site publish
//! items with unique ids and subscribers at every site record what they are
//! told ([`crate::workload`]), while faults drawn from a seed are injected
//! one after the other:
//!
//! | kind | what it does | healed by |
//! |---|---|---|
//! | `kill` | `kill -9` of the leader, a minority, or every node | restart |
//! | `pause` | SIGSTOP of the leader or a minority | SIGCONT |
//! | `partition` | majority/minority, leader isolated, or a bridge (two halves that both hear one node) | rules removed |
//! | `netem` | packet loss (`iptables -m statistic`) and delay (`tc netem`, when the kernel has it) at a minority | rules removed |
//! | `clock` | a node's wall clock jumps by ±30 s … 15 min (libfaketime) | jumps back |
//! | `membership` | `vomesh cluster remove` a node, wipe its mesh state, start it empty, `vomesh cluster add` it | (the change itself) |
//! | `powerloss` | `kill -9` of a minority or every node with [`POWER_LOSS_ENV`] set: unsynced writes are lost | restart |
//!
//! After each fault is healed the run waits until every member site
//! acknowledges a publish again (its *recovery time*), then stays quiet for
//! a moment. At the end everything is healed, the cluster settles, and the
//! history checker compares the history with every site's final archive.
//!
//! **Seeds.** The seed fixes the schedule (kinds, targets, durations, quiet
//! gaps, loss and delay figures, clock offsets) and the clients' plan (one
//! publisher and one subscriber per site, item ids `p<site>-<n>`). Real
//! processes on a shared machine do not replay bit for bit: which publish is
//! in flight when a fault strikes varies, and targets named by role (the
//! leader) are resolved when the fault is injected.
//!
//! Partitions and packet faults need a network namespace per node
//! ([`crate::netns`]); without them they are skipped with the reason
//! printed, and the other kinds still run on loopback.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use vomesh_mesh::power_loss::POWER_LOSS_ENV;

use crate::cluster::TestCluster;
use crate::history::{Report, Site, check, recovery};
use crate::measure::{millis, percentile};
use crate::netns::{self, Namespaces};
use crate::node::NodeOptions;
use crate::workload::{Workload, archives, set_up, settle};

/// One kind of fault (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Kill,
    Pause,
    Partition,
    Netem,
    Clock,
    Membership,
    PowerLoss,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Netem,
        FaultKind::Clock,
        FaultKind::Membership,
        FaultKind::PowerLoss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Netem => "netem",
            FaultKind::Clock => "clock",
            FaultKind::Membership => "membership",
            FaultKind::PowerLoss => "powerloss",
        }
    }

    /// Whether the kind needs a network namespace per node.
    fn needs_namespaces(self) -> bool {
        matches!(self, FaultKind::Partition | FaultKind::Netem)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault {name:?}; known: {}", names.join(","))
            })
    }
}

/// Which nodes a fault strikes; `Leader` is resolved when it is injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Leader,
    Nodes(Vec<usize>),
    All,
}

/// How a partition splits the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// These nodes (fewer than half) from the rest.
    Minority(Vec<usize>),
    /// The leader (at injection) from everyone else.
    LeaderIsolated,
    /// The other nodes split in two halves that cannot hear each other;
    /// both still hear `bridge`.
    Bridge { bridge: usize },
}

/// One fault of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Kill(Target),
    Pause(Target),
    Partition(Cut),
    Degrade {
        nodes: Vec<usize>,
        loss_percent: u32,
        delay_ms: u32,
    },
    ClockJump {
        node: usize,
        offset_secs: i64,
    },
    Membership {
        node: usize,
    },
    PowerLoss(Target),
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill(_) => FaultKind::Kill,
            Fault::Pause(_) => FaultKind::Pause,
            Fault::Partition(_) => FaultKind::Partition,
            Fault::Degrade { .. } => FaultKind::Netem,
            Fault::ClockJump { .. } => FaultKind::Clock,
            Fault::Membership { .. } => FaultKind::Membership,
            Fault::PowerLoss(_) => FaultKind::PowerLoss,
        }
    }
}

/// A fault, when it starts and how long it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Quiet time before the fault (after the previous one recovered).
    pub quiet: Duration,
    pub fault: Fault,
    pub hold: Duration,
}

/// The faults a seed gives for `nodes` nodes, until their quiet and hold
/// times add up to `duration`. Kinds come in rounds, each a shuffle of
/// `kinds`, and the last round is completed, so every kind is exercised
/// about equally and at least once.
pub fn plan(seed: u64, nodes: usize, kinds: &[FaultKind], duration: Duration) -> Vec<Planned> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut schedule = Vec::new();
    let mut planned = Duration::ZERO;
    let minority_max = (nodes - 1) / 2;
    let minority = |rng: &mut Xoshiro256PlusPlus| -> Vec<usize> {
        let size = rng.random_range(1..=minority_max);
        let mut all: Vec<usize> = (0..nodes).collect();
        let mut chosen = Vec::new();
        for _ in 0..size {
            chosen.push(all.swap_remove(rng.random_range(0..all.len())));
        }
        chosen.sort_unstable();
        chosen
    };
    let mut round: Vec<FaultKind> = Vec::new();
    while (planned < duration || !round.is_empty()) && !kinds.is_empty() {
        if round.is_empty() {
            round = kinds.to_vec();
            // Fisher-Yates, drawn from the seed.
            for i in (1..round.len()).rev() {
                round.swap(i, rng.random_range(0..=i));
            }
        }
        let kind = round.pop().expect("a round is refilled when empty");
        let quiet = Duration::from_millis(rng.random_range(2_000..5_000));
        let hold = Duration::from_millis(rng.random_range(3_000..10_000));
        let fault = match kind {
            FaultKind::Kill => Fault::Kill(match rng.random_range(0..4) {
                0 | 1 => Target::Leader,
                2 => Target::Nodes(minority(&mut rng)),
                _ => Target::All,
            }),
            FaultKind::Pause => Fault::Pause(if rng.random_bool(0.5) {
                Target::Leader
            } else {
                Target::Nodes(minority(&mut rng))
            }),
            FaultKind::Partition => Fault::Partition(match rng.random_range(0..3) {
                0 => Cut::Minority(minority(&mut rng)),
                1 => Cut::LeaderIsolated,
                _ => Cut::Bridge {
                    bridge: rng.random_range(0..nodes),
                },
            }),
            FaultKind::Netem => Fault::Degrade {
                nodes: minority(&mut rng),
                loss_percent: rng.random_range(5..=40),
                delay_ms: rng.random_range(20..=300),
            },
            FaultKind::Clock => {
                let magnitude = rng.random_range(30..=900);
                Fault::ClockJump {
                    node: rng.random_range(0..nodes),
                    offset_secs: if rng.random_bool(0.5) {
                        magnitude
                    } else {
                        -magnitude
                    },
                }
            }
            // Not node 0, as when the seeds' schedules were fixed; the lowest
            // id restarting empty (it waits to be re-added rather than
            // founding a cluster) is tested in mesh/tests/cluster.rs.
            FaultKind::Membership => Fault::Membership {
                node: rng.random_range(1..nodes),
            },
            FaultKind::PowerLoss => Fault::PowerLoss(if rng.random_bool(0.5) {
                Target::All
            } else {
                Target::Nodes(minority(&mut rng))
            }),
        };
        planned += quiet + hold;
        schedule.push(Planned { quiet, fault, hold });
    }
    schedule
}

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    /// Quiet and fault time to plan (the run adds the recovery waits).
    pub duration: Duration,
    pub seed: u64,
    pub kinds: Vec<FaultKind>,
    /// The mesh's `snapshot_every_entries`: small, so snapshots are taken
    /// (and sent to nodes that lag) while faults happen.
    pub snapshot_every_entries: u64,
    /// Each publisher's pause between publishes.
    pub pause_between_publishes: Duration,
    /// Where the history, reports and node logs of a failed run are kept.
    pub keep_dir: PathBuf,
    /// Use network namespaces when available (`false`: loopback only).
    pub namespaces: bool,
}

/// How long the mesh gets to acknowledge at every site after a heal
/// before the run counts the fault as not recovered and fails.
const RECOVERY_MAX: Duration = Duration::from_secs(90);

/// A fault as it happened.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub fault: Fault,
    /// The fault with its targets resolved, e.g. "kill -9 leader (node 3)".
    pub description: String,
    pub injected_ms: u64,
    pub healed_ms: u64,
    /// From the heal until every member site acknowledged a publish sent
    /// after it; `None`: not within [`RECOVERY_MAX`].
    pub recovery: Option<Duration>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub seed: u64,
    pub nodes: usize,
    pub elapsed: Duration,
    /// Kinds asked for but not run, with the reason.
    pub skipped: Vec<(FaultKind, String)>,
    pub faults: Vec<FaultRecord>,
    pub history: Report,
    /// Sites whose final applied index differs from the others'.
    pub applied_differs: Vec<Site>,
    /// Per clock jump: the offset asked for and the median offset of the
    /// publication stamps the jumped node gave while it was in force
    /// (seconds), with the number of items: evidence the jump happened.
    pub clock_jumps_seen: Vec<(i64, Option<i64>, usize)>,
    /// Committed items whose stamp lies outside every clock the run set
    /// (the real clock during the run, ± the largest jump).
    pub stamps_out_of_range: usize,
    /// Where the history was kept (a failed run).
    pub kept: Option<PathBuf>,
}

impl RunReport {
    /// Zero lost, zero divergent, nothing else wrong, every fault recovered.
    pub fn passed(&self) -> bool {
        self.history.is_clean()
            && self.applied_differs.is_empty()
            && self.stamps_out_of_range == 0
            && self.faults.iter().all(|f| f.recovery.is_some())
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.history;
        writeln!(
            f,
            "== nemesis report (seed {}, {} nodes, {:.0?}) ==",
            self.seed, self.nodes, self.elapsed
        )?;
        for (kind, reason) in &self.skipped {
            writeln!(f, "skipped {kind}: {reason}")?;
        }
        writeln!(
            f,
            "publishes: {} attempted, {} acknowledged, {} failed, {} indeterminate; {} committed",
            h.attempted, h.acknowledged, h.failed, h.indeterminate, h.committed
        )?;
        writeln!(
            f,
            "lost acknowledged: {} (prefix {}, middle {}, postfix {})",
            h.lost, h.lost_prefix, h.lost_middle, h.lost_postfix
        )?;
        writeln!(
            f,
            "unexpected items: {}; duplicates: {}; delivery mismatches: {}; refused but committed: {}",
            h.unattempted, h.duplicates, h.delivery_mismatches, h.failed_committed
        )?;
        writeln!(
            f,
            "order violations: {} (by site: {:?})",
            h.order_violations, h.order_violations_by_site
        )?;
        writeln!(
            f,
            "divergent final archives: {:?}; applied index differs: {:?}",
            h.divergent_sites, self.applied_differs
        )?;
        for (asked, seen, items) in &self.clock_jumps_seen {
            match seen {
                Some(seen) => writeln!(
                    f,
                    "clock jump {asked:+} s: the node's stamps were {seen:+} s off ({items} items)"
                )?,
                None => writeln!(
                    f,
                    "clock jump {asked:+} s: no item published there meanwhile"
                )?,
            }
        }
        writeln!(f, "stamps out of range: {}", self.stamps_out_of_range)?;
        let mut by_kind: BTreeMap<FaultKind, Vec<&FaultRecord>> = BTreeMap::new();
        for record in &self.faults {
            by_kind.entry(record.kind).or_default().push(record);
        }
        writeln!(f, "faults injected: {}", self.faults.len())?;
        for (kind, records) in by_kind {
            let mut recoveries: Vec<Duration> = records.iter().filter_map(|r| r.recovery).collect();
            recoveries.sort_unstable();
            let unrecovered = records.len() - recoveries.len();
            if recoveries.is_empty() {
                writeln!(
                    f,
                    "  {kind:<10} {:>4}  never recovered: {unrecovered}",
                    records.len()
                )?;
                continue;
            }
            writeln!(
                f,
                "  {kind:<10} {:>4}  recovery p50 {:>7.0} ms  p99 {:>7.0} ms  max {:>7.0} ms{}",
                records.len(),
                millis(percentile(&recoveries, 0.50)),
                millis(percentile(&recoveries, 0.99)),
                millis(*recoveries.last().unwrap_or(&Duration::ZERO)),
                if unrecovered > 0 {
                    format!("  never recovered: {unrecovered}")
                } else {
                    String::new()
                }
            )?;
        }
        for problem in &h.problems {
            writeln!(f, "  problem: {problem}")?;
        }
        if let Some(kept) = &self.kept {
            writeln!(f, "history kept in {}", kept.display())?;
        }
        write!(f, "result: {}", if self.passed() { "PASS" } else { "FAIL" })
    }
}

/// libfaketime's preload library (Debian's `libfaketime`), installed on
/// first use if it is missing; `Err` says why clock jumps cannot run.
fn faketime_library() -> Result<PathBuf, String> {
    const LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    let library = PathBuf::from(LIBRARY);
    if !library.is_file() {
        eprintln!("nemesis: installing libfaketime for clock jumps");
        for args in [
            &["update", "-qq"][..],
            &["install", "-y", "-qq", "libfaketime"],
        ] {
            let _ = std::process::Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(std::process::Stdio::null())
                .status();
        }
    }
    if library.is_file() {
        Ok(library)
    } else {
        Err(format!("{LIBRARY} missing (apt-get install libfaketime)"))
    }
}

/// Where node `slot`'s clock offset is written (libfaketime's
/// `FAKETIME_TIMESTAMP_FILE`: "+0", "-120"… seconds).
fn clock_file(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("clock-offset-{slot}"))
}

fn set_clock_offset(dir: &Path, slot: usize, offset_secs: i64) {
    std::fs::write(clock_file(dir, slot), format!("{offset_secs:+}\n"))
        .expect("writing a clock offset file");
}

/// What the run can use here, decided before the cluster starts.
struct Environment {
    namespaces: Option<Namespaces>,
    faketime: Option<PathBuf>,
    clock_dir: tempfile::TempDir,
    kinds: Vec<FaultKind>,
    skipped: Vec<(FaultKind, String)>,
}

impl Environment {
    fn prepare(options: &Options) -> Environment {
        let mut skipped = Vec::new();
        let wants = |kind| options.kinds.contains(&kind);
        let namespaces_wanted = options.kinds.iter().any(|k| k.needs_namespaces());
        let namespaces = match (namespaces_wanted, options.namespaces) {
            (false, _) => None,
            (true, false) => {
                for kind in options.kinds.iter().filter(|k| k.needs_namespaces()) {
                    skipped.push((*kind, "loopback only (namespaces not asked for)".into()));
                }
                None
            }
            (true, true) => match netns::available() {
                // One spare slot for nothing yet: membership re-adds an
                // existing id, so `nodes` slots suffice.
                Ok(()) => Some(Namespaces::create(options.nodes)),
                Err(reason) => {
                    for kind in options.kinds.iter().filter(|k| k.needs_namespaces()) {
                        skipped.push((*kind, format!("no network namespaces: {reason}")));
                    }
                    None
                }
            },
        };
        if let Some(namespaces) = &namespaces
            && wants(FaultKind::Netem)
            && !namespaces.has_netem()
        {
            eprintln!(
                "nemesis: the kernel has no netem qdisc: netem faults drop packets \
                 (iptables) but add no delay"
            );
        }
        let faketime = if wants(FaultKind::Clock) {
            match faketime_library() {
                Ok(library) => Some(library),
                Err(reason) => {
                    skipped.push((FaultKind::Clock, reason));
                    None
                }
            }
        } else {
            None
        };
        let kinds = options
            .kinds
            .iter()
            .copied()
            .filter(|kind| !skipped.iter().any(|(k, _)| k == kind))
            .collect();
        Environment {
            namespaces,
            faketime,
            clock_dir: tempfile::tempdir().expect("a temporary directory"),
            kinds,
            skipped,
        }
    }

    /// Options of node `slot`: its namespace, the power-loss store and the
    /// adjustable clock, as the run needs them.
    fn node_options(&self, slot: usize, power_loss: bool) -> NodeOptions {
        let mut options = match &self.namespaces {
            Some(namespaces) => namespaces.node_options(slot),
            None => NodeOptions::default(),
        };
        options.log_filter = "info".into();
        if power_loss {
            options.env.push((POWER_LOSS_ENV.into(), "1".into()));
        }
        if let Some(library) = &self.faketime {
            set_clock_offset(self.clock_dir.path(), slot, 0);
            let file = clock_file(self.clock_dir.path(), slot);
            options.env.extend([
                ("LD_PRELOAD".into(), library.display().to_string()),
                ("FAKETIME_TIMESTAMP_FILE".into(), file.display().to_string()),
                // Only the wall clock jumps: Raft's timers, QUIC's and
                // tokio's use the monotonic clock, which a jump of the
                // system time does not move either.
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
                // Re-read the offset file every second.
                ("FAKETIME_CACHE_DURATION".into(), "1".into()),
            ]);
        }
        options
    }
}

/// Runs the nemesis against a fresh cluster and checks the history.
pub async fn run(options: Options) -> RunReport {
    // Built first (a test process builds it), so the time is the run's.
    tokio::task::block_in_place(crate::node::vomesh_bin);
    let started = Instant::now();
    let environment = Environment::prepare(&options);
    for (kind, reason) in &environment.skipped {
        println!("nemesis: skipping {kind}: {reason}");
    }
    println!(
        "nemesis: {} nodes {}, faults {:?}",
        options.nodes,
        if environment.namespaces.is_some() {
            "each in its own network namespace"
        } else {
            "on loopback"
        },
        environment
            .kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
    );
    let schedule = plan(
        options.seed,
        options.nodes,
        &environment.kinds,
        options.duration,
    );
    let power_loss = environment.kinds.contains(&FaultKind::PowerLoss);
    let slots: Vec<NodeOptions> = (0..options.nodes)
        .map(|slot| environment.node_options(slot, power_loss))
        .collect();
    // By entries alone (no growth condition): snapshots keep coming, and
    // being sent to lagging nodes, however large the state gets.
    let settings = format!(
        "snapshot_every_entries = {}\n\
         snapshot_log_growth_percent = 0\n\
         log_entries_kept_after_snapshot = {}\n\
         heartbeat_interval_ms = 100\n\
         election_timeout_min_ms = 600\n\
         election_timeout_max_ms = 1200\n\
         propose_timeout_ms = {}\n",
        options.snapshot_every_entries,
        options.snapshot_every_entries / 4,
        crate::workload::PROPOSE_TIMEOUT.as_millis()
    );
    let mut cluster = tokio::task::block_in_place(|| {
        TestCluster::start_custom(
            options.nodes,
            &settings,
            Box::new(move |slot| slots[slot].clone()),
        )
    });
    set_up(&cluster).await;

    let mut workload = Workload::default();
    // The recorder's clock (ms since it was made) against the real clock.
    let wall_start_micros = vomesh_broker::clock::now_micros();
    workload.pause_between_publishes = options.pause_between_publishes;
    for site in 0..options.nodes {
        workload.resubscribing(site * 1_000_000, site, &cluster.nodes[site]);
        workload.publisher(site, site, &cluster.nodes[site]);
    }

    let mut nemesis = Nemesis {
        cluster: &mut cluster,
        environment: &environment,
        workload: &workload,
    };
    let mut faults = Vec::new();
    // The schedule fills the duration with quiet and fault time; waiting
    // for recovery after each fault makes the run longer by that much.
    for (number, planned) in schedule.iter().enumerate() {
        tokio::time::sleep(planned.quiet).await;
        let record = nemesis.inject(number + 1, planned).await;
        faults.push(record);
    }
    nemesis.heal_all();

    println!("nemesis: schedule done; settling and reading every archive");
    workload.stop_publishers().await;
    tokio::task::block_in_place(|| settle(&cluster));
    // Subscribers get a moment to receive the last notifications.
    tokio::time::sleep(Duration::from_secs(2)).await;
    workload.stop_subscribers();
    let applied_differs = applied_differs(&cluster);
    let history = workload.recorder.history();
    let archives = archives(&cluster).await;
    let (clock_jumps_seen, stamps_out_of_range) =
        check_stamps(&faults, &history, &archives, wall_start_micros);
    let mut report = RunReport {
        seed: options.seed,
        nodes: options.nodes,
        elapsed: started.elapsed(),
        skipped: environment.skipped.clone(),
        faults,
        history: check(&history, &archives),
        applied_differs,
        clock_jumps_seen,
        stamps_out_of_range,
        kept: None,
    };
    if !report.passed() {
        report.kept = Some(keep(
            &options.keep_dir,
            &report,
            &history,
            &archives,
            &cluster,
        ));
    }
    report
}

/// How far each clock jump moved the stamps of the jumped node (see
/// [`RunReport::clock_jumps_seen`]), and how many committed stamps lie
/// outside the run's clocks. libfaketime re-reads the offset each second,
/// so publishes in the first 1.5 s of a jump are not looked at.
fn check_stamps(
    faults: &[FaultRecord],
    history: &crate::history::History,
    archives: &BTreeMap<Site, Vec<crate::history::ArchivedItem>>,
    wall_start_micros: i64,
) -> (Vec<(i64, Option<i64>, usize)>, usize) {
    use vomesh_broker::pubsub::datetime::parse_micros;
    let stamps: std::collections::HashMap<&str, i64> = archives
        .values()
        .next()
        .into_iter()
        .flatten()
        .filter_map(|item| Some((item.item_id.as_str(), parse_micros(item.stamp.as_deref()?)?)))
        .collect();
    let wall_at = |ms: u64| wall_start_micros + ms as i64 * 1_000;
    let mut seen = Vec::new();
    let mut largest_jump_secs = 0;
    for record in faults {
        let Fault::ClockJump { node, offset_secs } = record.fault else {
            continue;
        };
        largest_jump_secs = largest_jump_secs.max(offset_secs.abs());
        let mut offsets: Vec<i64> = history
            .attempts
            .iter()
            .filter(|a| a.site == node && a.started_ms >= record.injected_ms + 1_500)
            .filter(|a| a.answered_ms <= record.healed_ms)
            .filter_map(|a| {
                Some((stamps.get(a.item_id.as_str())? - wall_at(a.answered_ms)) / 1_000_000)
            })
            .collect();
        offsets.sort_unstable();
        seen.push((
            offset_secs,
            offsets.get(offsets.len() / 2).copied(),
            offsets.len(),
        ));
    }
    let slack_micros = (largest_jump_secs + 60) * 1_000_000;
    let end = wall_at(
        history
            .attempts
            .iter()
            .map(|a| a.answered_ms)
            .max()
            .unwrap_or(0),
    );
    let out_of_range = stamps
        .values()
        .filter(|stamp| **stamp < wall_start_micros - slack_micros || **stamp > end + slack_micros)
        .count();
    (seen, out_of_range)
}

/// Running sites whose applied index is not the first running site's.
fn applied_differs(cluster: &TestCluster) -> Vec<Site> {
    let applied: Vec<(Site, Option<u64>)> = cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, node)| node.is_running())
        .map(|(site, node)| {
            (
                site,
                node.status().and_then(|s| s["applied_index"].as_u64()),
            )
        })
        .collect();
    let reference = applied.first().and_then(|(_, a)| *a);
    applied
        .into_iter()
        .filter(|(_, a)| a.is_none() || *a != reference)
        .map(|(site, _)| site)
        .collect()
}

/// Writes the history, the archives, the report and every node's log
/// under `keep_dir/seed-<seed>/`.
fn keep(
    keep_dir: &Path,
    report: &RunReport,
    history: &crate::history::History,
    archives: &BTreeMap<Site, Vec<crate::history::ArchivedItem>>,
    cluster: &TestCluster,
) -> PathBuf {
    let dir = keep_dir.join(format!("seed-{}", report.seed));
    let saved = (|| -> std::io::Result<()> {
        history.save(&dir)?;
        std::fs::write(dir.join("report.txt"), format!("{report}\n"))?;
        for (site, archive) in archives {
            let lines: Vec<String> = archive
                .iter()
                .map(|i| {
                    format!(
                        "{} {} {}",
                        i.archive_id,
                        i.item_id,
                        i.stamp.as_deref().unwrap_or("-")
                    )
                })
                .collect();
            std::fs::write(
                dir.join(format!("archive-{site}.txt")),
                lines.join("\n") + "\n",
            )?;
        }
        for (site, node) in cluster.nodes.iter().enumerate() {
            std::fs::write(dir.join(format!("node-{site}.log")), node.log())?;
        }
        Ok(())
    })();
    if let Err(error) = saved {
        eprintln!(
            "nemesis: could not keep the history in {}: {error}",
            dir.display()
        );
    }
    dir
}

/// Injects and heals faults on a running cluster.
struct Nemesis<'a> {
    cluster: &'a mut TestCluster,
    environment: &'a Environment,
    workload: &'a Workload,
}

impl Nemesis<'_> {
    fn now_ms(&self) -> u64 {
        self.workload.recorder.now_ms()
    }

    /// The leader the running nodes report (the first answer), else node 0.
    fn leader(&self) -> usize {
        self.cluster
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .find_map(|n| n.status().and_then(|s| s["leader"].as_u64()))
            .map_or(0, |id| id as usize - 1)
    }

    fn resolve(&self, target: &Target) -> Vec<usize> {
        match target {
            Target::Leader => vec![self.leader()],
            Target::Nodes(nodes) => nodes.clone(),
            Target::All => (0..self.cluster.nodes.len()).collect(),
        }
    }

    fn namespaces(&self) -> &Namespaces {
        self.environment
            .namespaces
            .as_ref()
            .expect("network faults are planned only with namespaces")
    }

    /// Injects `planned`, holds it, heals it and waits for recovery.
    async fn inject(&mut self, number: usize, planned: &Planned) -> FaultRecord {
        let injected_ms = self.now_ms();
        let description = self.start(&planned.fault).await;
        println!(
            "nemesis: [{:>7.1} s] fault {number}: {description} for {:.1?}",
            injected_ms as f64 / 1000.0,
            planned.hold
        );
        tokio::time::sleep(planned.hold).await;
        self.heal(&planned.fault).await;
        let healed_ms = self.now_ms();
        let recovery = self.wait_recovery(healed_ms).await;
        match recovery {
            Some(took) => println!(
                "nemesis: [{:>7.1} s] healed; every site acknowledges again after {} ms",
                healed_ms as f64 / 1000.0,
                took.as_millis()
            ),
            None => {
                let history = self.workload.recorder.history();
                let last: Vec<String> = (0..self.cluster.nodes.len())
                    .map(|site| {
                        let last = history.attempts.iter().rev().find(|a| a.site == site);
                        format!("site {site}: {:?}", last.map(|a| &a.outcome))
                    })
                    .collect();
                println!(
                    "nemesis: [{:>7.1} s] healed; NOT RECOVERED within {RECOVERY_MAX:?}; \
                     last answers: {}",
                    healed_ms as f64 / 1000.0,
                    last.join("; ")
                );
            }
        }
        FaultRecord {
            kind: planned.fault.kind(),
            fault: planned.fault.clone(),
            description,
            injected_ms,
            healed_ms,
            recovery,
        }
    }

    /// Starts `fault`; returns its description with targets resolved.
    async fn start(&mut self, fault: &Fault) -> String {
        match fault {
            Fault::Kill(target) | Fault::PowerLoss(target) => {
                let nodes = self.resolve(target);
                for node in &nodes {
                    self.cluster.nodes[*node].kill9();
                }
                let what = if matches!(fault, Fault::Kill(_)) {
                    "kill -9"
                } else {
                    "power loss (unsynced writes dropped) of"
                };
                format!("{what} {} {nodes:?}", describe(target))
            }
            Fault::Pause(target) => {
                let nodes = self.resolve(target);
                for node in &nodes {
                    self.cluster.nodes[*node].pause();
                }
                format!("SIGSTOP {} {nodes:?}", describe(target))
            }
            Fault::Partition(cut) => {
                let all: Vec<usize> = (0..self.cluster.nodes.len()).collect();
                let (left, right, shape) = match cut {
                    Cut::Minority(minority) => (
                        minority.clone(),
                        without(&all, minority),
                        "minority from majority",
                    ),
                    Cut::LeaderIsolated => {
                        let leader = self.leader();
                        (vec![leader], without(&all, &[leader]), "leader isolated")
                    }
                    Cut::Bridge { bridge } => {
                        let others = without(&all, &[*bridge]);
                        let half = others.len() / 2;
                        (others[..half].to_vec(), others[half..].to_vec(), "bridge")
                    }
                };
                self.namespaces().cut_between(&left, &right);
                format!("partition ({shape}) {left:?} | {right:?}")
            }
            Fault::Degrade {
                nodes,
                loss_percent,
                delay_ms,
            } => {
                let namespaces = self.namespaces();
                for node in nodes {
                    namespaces.degrade(*node, *loss_percent, *delay_ms);
                }
                if namespaces.has_netem() {
                    format!("{loss_percent}% loss and {delay_ms} ms delay at {nodes:?}")
                } else {
                    format!("{loss_percent}% loss (no netem: no delay) at {nodes:?}")
                }
            }
            Fault::ClockJump { node, offset_secs } => {
                set_clock_offset(self.environment.clock_dir.path(), *node, *offset_secs);
                format!("clock of node {node} jumps {offset_secs:+} s")
            }
            Fault::Membership { node } => {
                self.remove_member(*node).await;
                format!("node {node} removed from the mesh, its mesh state wiped")
            }
        }
    }

    /// Ends `fault`.
    async fn heal(&mut self, fault: &Fault) {
        match fault {
            Fault::Kill(_) | Fault::PowerLoss(_) => self.restart_stopped(),
            Fault::Pause(_) => {
                for node in &self.cluster.nodes {
                    node.resume();
                }
            }
            Fault::Partition(_) | Fault::Degrade { .. } => self.namespaces().heal(),
            Fault::ClockJump { node, .. } => {
                set_clock_offset(self.environment.clock_dir.path(), *node, 0);
            }
            Fault::Membership { node } => self.add_member(*node).await,
        }
    }

    /// Heals whatever may still be in force (at the end of a run).
    fn heal_all(&mut self) {
        for node in &self.cluster.nodes {
            node.resume();
        }
        if let Some(namespaces) = &self.environment.namespaces {
            namespaces.heal();
        }
        self.restart_stopped();
    }

    fn restart_stopped(&mut self) {
        for node in &mut self.cluster.nodes {
            if !node.is_running() {
                tokio::task::block_in_place(|| node.restart());
            }
        }
    }

    /// `vomesh cluster remove`, asked at another node until it succeeds;
    /// then the node is killed and its data deleted.
    async fn remove_member(&mut self, node: usize) {
        let id = (node + 1).to_string();
        self.admin_until_ok(node, &["cluster", "remove", &id]).await;
        self.cluster.nodes[node].kill9();
        self.cluster.nodes[node].wipe_mesh_state();
    }

    /// Starts the wiped node empty and `vomesh cluster add`s it back.
    async fn add_member(&mut self, node: usize) {
        tokio::task::block_in_place(|| self.cluster.nodes[node].restart());
        let id = (node + 1).to_string();
        let address = self.cluster.mesh_address(node);
        self.admin_until_ok(node, &["cluster", "add", &id, &address])
            .await;
    }

    /// Runs an admin command at a running node other than `not` until it
    /// succeeds (a membership change is refused while another is under
    /// way or no leader is known).
    async fn admin_until_ok(&self, not: usize, args: &[&str]) {
        let deadline = Instant::now() + RECOVERY_MAX;
        loop {
            let at = (0..self.cluster.nodes.len())
                .find(|i| *i != not && self.cluster.nodes[*i].is_running())
                .expect("a running node to ask");
            let (status, _, stderr) =
                tokio::task::block_in_place(|| self.cluster.nodes[at].cli(args));
            if status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "vomesh {} kept failing: {stderr}",
                args.join(" ")
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until every site acknowledged a publish sent after
    /// `healed_ms` (see [`recovery`]).
    async fn wait_recovery(&self, healed_ms: u64) -> Option<Duration> {
        let sites: Vec<Site> = (0..self.cluster.nodes.len()).collect();
        let deadline = Instant::now() + RECOVERY_MAX;
        loop {
            if let Some(took) = recovery(&self.workload.recorder.history(), healed_ms, &sites) {
                return Some(took);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn describe(target: &Target) -> &'static str {
    match target {
        Target::Leader => "the leader",
        Target::Nodes(_) => "nodes",
        Target::All => "every node",
    }
}

fn without(all: &[usize], excluded: &[usize]) -> Vec<usize> {
    all.iter()
        .copied()
        .filter(|n| !excluded.contains(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_every_time() {
        let kinds = FaultKind::ALL;
        let a = plan(42, 5, &kinds, Duration::from_secs(600));
        assert_eq!(a, plan(42, 5, &kinds, Duration::from_secs(600)));
        assert_ne!(a, plan(43, 5, &kinds, Duration::from_secs(600)));
        // Every kind comes up in ten minutes.
        for kind in kinds {
            assert!(a.iter().any(|p| p.fault.kind() == kind), "{kind} planned");
        }
    }

    #[test]
    fn faults_strike_a_minority_and_membership_spares_node_0() {
        for seed in 0..50 {
            for planned in plan(seed, 3, &FaultKind::ALL, Duration::from_secs(120)) {
                match planned.fault {
                    Fault::Kill(Target::Nodes(nodes))
                    | Fault::Pause(Target::Nodes(nodes))
                    | Fault::PowerLoss(Target::Nodes(nodes))
                    | Fault::Partition(Cut::Minority(nodes))
                    | Fault::Degrade { nodes, .. } => assert_eq!(nodes.len(), 1),
                    Fault::Membership { node } => assert!(node > 0),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn fault_names_parse() {
        for kind in FaultKind::ALL {
            assert_eq!(kind.name().parse::<FaultKind>(), Ok(kind));
        }
        assert!("flood".parse::<FaultKind>().is_err());
    }
}
