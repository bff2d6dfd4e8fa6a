//! What a run means to an operator: latency distributions per site,
//! failover times, losses, bytes per event; as a text table and CSV.

use std::fmt::Write as _;
use std::time::Duration;

use vomesh_mesh::types::NodeId;

use crate::checker::{Violation, check};
use crate::sim::{EPOCH_MICROS, EventOutcome, RunOutput};

/// Percentiles of a sample, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Distribution {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Distribution {
    pub fn of(mut samples_ms: Vec<f64>) -> Self {
        if samples_ms.is_empty() {
            return Self::default();
        }
        samples_ms.sort_by(f64::total_cmp);
        let at = |q: f64| samples_ms[((samples_ms.len() - 1) as f64 * q).round() as usize];
        Self {
            count: samples_ms.len(),
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// One site's figures.
#[derive(Clone, Debug)]
pub struct SiteSummary {
    pub id: NodeId,
    pub name: String,
    /// Publications made at this site, acknowledged there.
    pub ack: Distribution,
    pub ack_samples_ms: Vec<f64>,
    /// Every acknowledged publication's first delivery at this site.
    pub delivery: Distribution,
    /// The delivery latencies themselves (ms), for the plots.
    pub delivery_samples_ms: Vec<f64>,
    pub recipients: u64,
    pub bytes_sent: u64,
    pub bytes_per_event: f64,
}

/// A run's figures.
#[derive(Clone, Debug)]
pub struct Summary {
    pub scenario: String,
    /// The first seed, and how many seeds are pooled here.
    pub seed: u64,
    pub seeds: u64,
    pub published: usize,
    pub acked: usize,
    pub not_acked: usize,
    pub site_down: usize,
    /// Acknowledged publications missing somewhere (must be 0).
    pub acked_lost: usize,
    pub violations: Vec<Violation>,
    pub sites: Vec<SiteSummary>,
    /// Failover times of the leader-site losses that recovered, ms.
    pub failovers_ms: Vec<f64>,
    pub failovers_unrecovered: usize,
    pub final_term: u64,
    pub joins: Vec<(String, f64, Option<f64>)>,
    pub duration_s: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Summary {
    pub fn of(run: &RunOutput) -> Self {
        let violations = check(&run.events, &run.journal, &run.liveness);
        let acked: Vec<_> = run
            .events
            .iter()
            .filter(|e| matches!(e.outcome, EventOutcome::Acked { .. }))
            .collect();
        let count =
            |f: fn(&EventOutcome) -> bool| run.events.iter().filter(|e| f(&e.outcome)).count();
        let sites = run
            .sites
            .iter()
            .enumerate()
            .map(|(i, site)| {
                let id = i as NodeId + 1;
                let ack_samples_ms: Vec<f64> = acked
                    .iter()
                    .filter(|e| e.site == id)
                    .filter_map(|e| match e.outcome {
                        EventOutcome::Acked { at, .. } => Some(ms(at) - ms(e.published_at)),
                        _ => None,
                    })
                    .collect();
                let deliveries = run.journal.deliveries.get(&id);
                let delivery_samples_ms: Vec<f64> = acked
                    .iter()
                    .filter_map(|e| {
                        let d = deliveries?.get(&e.published_micros)?;
                        let published_ms = (e.published_micros - EPOCH_MICROS) as f64 / 1000.0;
                        Some(ms(d.at) - published_ms)
                    })
                    .collect();
                let recipients = deliveries.map_or(0, |d| d.values().map(|d| d.recipients).sum());
                let bytes_sent = run.bytes_sent.get(&id).copied().unwrap_or(0);
                SiteSummary {
                    id,
                    name: site.name.clone(),
                    ack: Distribution::of(ack_samples_ms.clone()),
                    ack_samples_ms,
                    delivery: Distribution::of(delivery_samples_ms.clone()),
                    delivery_samples_ms,
                    recipients,
                    bytes_sent,
                    bytes_per_event: bytes_sent as f64 / acked.len().max(1) as f64,
                }
            })
            .collect();
        let name = |id: NodeId| run.sites[(id - 1) as usize].name.clone();
        Self {
            scenario: run.scenario.clone(),
            seed: run.seed,
            seeds: 1,
            published: run.events.len(),
            acked: acked.len(),
            not_acked: count(|o| matches!(o, EventOutcome::NotAcked)),
            site_down: count(|o| matches!(o, EventOutcome::SiteDown)),
            acked_lost: violations
                .iter()
                .filter(|v| {
                    matches!(
                        v,
                        Violation::AckedLost { .. } | Violation::AckedReplaced { .. }
                    )
                })
                .count(),
            violations,
            sites,
            failovers_ms: run
                .failovers
                .iter()
                .filter_map(|f| f.took.map(ms))
                .collect(),
            failovers_unrecovered: run.failovers.iter().filter(|f| f.took.is_none()).count(),
            final_term: run.final_term,
            joins: run
                .joins
                .iter()
                .map(|(id, at, done)| (name(*id), at.as_secs_f64(), done.map(|d| d.as_secs_f64())))
                .collect(),
            duration_s: run.duration.as_secs_f64(),
        }
    }

    /// The figures of several runs of one scenario (seeds) together.
    pub fn pool(runs: &[Summary]) -> Summary {
        let Some((first, rest)) = runs.split_first() else {
            return Summary {
                scenario: String::new(),
                seed: 0,
                seeds: 0,
                published: 0,
                acked: 0,
                not_acked: 0,
                site_down: 0,
                acked_lost: 0,
                violations: Vec::new(),
                sites: Vec::new(),
                failovers_ms: Vec::new(),
                failovers_unrecovered: 0,
                final_term: 0,
                joins: Vec::new(),
                duration_s: 0.0,
            };
        };
        let mut pooled = first.clone();
        for run in rest {
            pooled.seeds += run.seeds;
            pooled.published += run.published;
            pooled.acked += run.acked;
            pooled.not_acked += run.not_acked;
            pooled.site_down += run.site_down;
            pooled.acked_lost += run.acked_lost;
            pooled.violations.extend(run.violations.iter().cloned());
            pooled.failovers_ms.extend(run.failovers_ms.iter().copied());
            pooled.failovers_unrecovered += run.failovers_unrecovered;
            pooled.final_term = pooled.final_term.max(run.final_term);
            pooled.joins.extend(run.joins.iter().cloned());
            pooled.duration_s += run.duration_s;
            for (site, other) in pooled.sites.iter_mut().zip(&run.sites) {
                site.ack_samples_ms
                    .extend(other.ack_samples_ms.iter().copied());
                site.delivery_samples_ms
                    .extend(other.delivery_samples_ms.iter().copied());
                site.recipients += other.recipients;
                site.bytes_sent += other.bytes_sent;
            }
        }
        for site in &mut pooled.sites {
            site.ack = Distribution::of(site.ack_samples_ms.clone());
            site.delivery = Distribution::of(site.delivery_samples_ms.clone());
            site.bytes_per_event = site.bytes_sent as f64 / pooled.acked.max(1) as f64;
        }
        pooled
    }

    /// The table a person reads.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let seeds = match self.seeds {
            1 => format!("seed {}", self.seed),
            n => format!("seeds {}..={}", self.seed, self.seed + n - 1),
        };
        let _ = writeln!(
            out,
            "scenario {} ({seeds}), {:.0} s of virtual time",
            self.scenario, self.duration_s
        );
        let _ = writeln!(
            out,
            "events: {} published, {} acknowledged, {} not acknowledged, {} at a site that was down or not yet a member; acknowledged but lost: {}",
            self.published, self.acked, self.not_acked, self.site_down, self.acked_lost
        );
        let _ = writeln!(
            out,
            "elections: highest final term {} ({} leader elections in the worst run)",
            self.final_term,
            self.final_term.saturating_sub(1)
        );
        if !self.failovers_ms.is_empty() || self.failovers_unrecovered > 0 {
            let d = Distribution::of(self.failovers_ms.clone());
            let _ = writeln!(
                out,
                "failover (leader site lost → a majority follows a new leader): {} times, p50 {:.0} ms, max {:.0} ms, {} not recovered",
                d.count, d.p50_ms, d.max_ms, self.failovers_unrecovered
            );
        }
        for (site, at, done) in &self.joins {
            let _ = match done {
                Some(done) => writeln!(
                    out,
                    "join: {site} started at {at:.0} s, voter after {:.1} s",
                    done - at
                ),
                None => writeln!(
                    out,
                    "join: {site} started at {at:.0} s, never became a voter"
                ),
            };
        }
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>12} {:>11}",
            "site",
            "ack p50",
            "ack p99",
            "acks",
            "deliv p50",
            "deliv p90",
            "deliv p99",
            "deliv max",
            "recipients",
            "bytes/event"
        );
        for s in &self.sites {
            let _ = writeln!(
                out,
                "{:<16} {:>8.0} {:>8.0} {:>8} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>12} {:>11.0}",
                s.name,
                s.ack.p50_ms,
                s.ack.p99_ms,
                s.ack.count,
                s.delivery.p50_ms,
                s.delivery.p90_ms,
                s.delivery.p99_ms,
                s.delivery.max_ms,
                s.recipients,
                s.bytes_per_event
            );
        }
        let _ = writeln!(out, "(latencies in ms of virtual time, from publication)");
        if self.violations.is_empty() {
            let _ = writeln!(out, "invariants: all hold");
        } else {
            for v in &self.violations {
                let _ = writeln!(out, "VIOLATION: {v}");
            }
        }
        out
    }

    /// One row per site.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "scenario,seed,site,ack_count,ack_p50_ms,ack_p90_ms,ack_p99_ms,ack_max_ms,delivery_count,delivery_p50_ms,delivery_p90_ms,delivery_p99_ms,delivery_max_ms,recipients,bytes_sent,bytes_per_event,published,acked,acked_lost,failover_p50_ms,failover_max_ms\n",
        );
        let f = Distribution::of(self.failovers_ms.clone());
        for s in &self.sites {
            let _ = writeln!(
                out,
                "{},{},{},{},{:.1},{:.1},{:.1},{:.1},{},{:.1},{:.1},{:.1},{:.1},{},{},{:.1},{},{},{},{:.1},{:.1}",
                self.scenario,
                self.seed,
                s.name,
                s.ack.count,
                s.ack.p50_ms,
                s.ack.p90_ms,
                s.ack.p99_ms,
                s.ack.max_ms,
                s.delivery.count,
                s.delivery.p50_ms,
                s.delivery.p90_ms,
                s.delivery.p99_ms,
                s.delivery.max_ms,
                s.recipients,
                s.bytes_sent,
                s.bytes_per_event,
                self.published,
                self.acked,
                self.acked_lost,
                f.p50_ms,
                f.max_ms
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_a_hundred() {
        let d = Distribution::of((1..=100).map(f64::from).collect());
        assert_eq!(
            (d.count, d.p50_ms, d.p99_ms, d.max_ms),
            (100, 51.0, 99.0, 100.0)
        );
    }

    #[test]
    fn percentiles_of_nothing_are_zero() {
        assert_eq!(Distribution::of(Vec::new()), Distribution::default());
    }
}
