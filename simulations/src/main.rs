//! `vomesh-sim`: run scenarios, the property mode, replays and the tuning
//! sweeps. See the README's "Simulations" section.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vomesh_sim::property::{random_scenario, run_seeds};
use vomesh_sim::report::Summary;
use vomesh_sim::scenario::Scenario;
use vomesh_sim::{plot, sim, tune};

#[derive(Parser)]
#[command(
    name = "vomesh-sim",
    about = "Deterministic WAN simulation of a vomesh mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenario files; write <name>.txt, .csv and -delivery.svg (and
    /// -failover.svg) to --out.
    Run {
        scenarios: Vec<PathBuf>,
        #[arg(long, default_value = "sim-out")]
        out: PathBuf,
        /// Seed of the (first) run; default: the scenario's.
        #[arg(long)]
        seed: Option<u64>,
        /// Run this many seeds (seed, seed+1, …) and pool their figures.
        #[arg(long, default_value_t = 1)]
        seeds: u64,
    },
    /// Random scenarios with random faults, one per seed, checked for
    /// safety and liveness.
    Property {
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        #[arg(long, default_value_t = 1)]
        first: u64,
        /// Threads (each seed still runs alone and deterministically).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
    /// Replays one property seed and prints its scenario and report.
    Replay {
        #[arg(long)]
        seed: u64,
    },
    /// The sweeps behind the default timeouts and batch size.
    Tune {
        #[arg(long, default_value = "sim-out")]
        out: PathBuf,
        #[arg(long, default_value_t = 20)]
        seeds: u64,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vomesh-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Run {
            scenarios,
            out,
            seed,
            seeds,
        } => {
            std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
            let mut ok = true;
            for path in scenarios {
                let scenario = Scenario::load(&path)?;
                ok &= run_scenario(&scenario, seed.unwrap_or(scenario.seed), seeds.max(1), &out)?;
            }
            Ok(ok)
        }
        Command::Property { seeds, first, jobs } => {
            let report = run_seeds(first, seeds, jobs);
            for failing in &report.failing {
                println!("seed {} FAILED:", failing.seed);
                for v in &failing.violations {
                    println!("  {v}");
                }
                println!(
                    "  replay: cargo run --release -p vomesh-sim -- replay --seed {}",
                    failing.seed
                );
            }
            println!(
                "{} seeds, {} failing, {} acknowledged events checked, {:.1} s wall, {:.1} seeds/s",
                report.seeds,
                report.failing.len(),
                report.acked,
                report.wall_s,
                report.seeds_per_s()
            );
            Ok(report.failing.is_empty())
        }
        Command::Replay { seed } => {
            println!("{:#?}", random_scenario(seed));
            let out = sim::run(&random_scenario(seed), seed)?;
            let summary = Summary::of(&out);
            print!("{}", summary.to_text());
            Ok(summary.violations.is_empty())
        }
        Command::Tune { out, seeds } => {
            std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
            let timeouts = tune::timeouts_table(&tune::timeouts(&out, seeds)?);
            // One seed per batch size: each burst run already gives 50 000 deliveries.
            let batches = tune::batches(&out, 1)?;
            let text = format!("{timeouts}\n{batches}");
            std::fs::write(out.join("tune.txt"), &text)?;
            print!("{text}");
            Ok(true)
        }
    }
}

/// Runs `seeds` seeds of `scenario`, pools them, writes the outputs.
fn run_scenario(scenario: &Scenario, first: u64, seeds: u64, out: &Path) -> anyhow::Result<bool> {
    let mut summaries = Vec::new();
    for seed in first..first + seeds {
        summaries.push(Summary::of(&sim::run(scenario, seed)?));
    }
    let pooled = Summary::pool(&summaries);
    let name = &scenario.name;
    let text = pooled.to_text();
    std::fs::write(out.join(format!("{name}.txt")), &text)?;
    std::fs::write(out.join(format!("{name}.csv")), pooled.to_csv())?;
    let series: Vec<(String, Vec<f64>)> = pooled
        .sites
        .iter()
        .map(|s| (s.name.clone(), s.delivery_samples_ms.clone()))
        .collect();
    plot::cdf_svg(
        &out.join(format!("{name}-delivery.svg")),
        &format!("{name}: publish→delivery latency per site"),
        "latency (ms of virtual time)",
        &series,
    )?;
    if !pooled.failovers_ms.is_empty() {
        plot::cdf_svg(
            &out.join(format!("{name}-failover.svg")),
            &format!(
                "{name}: failover time ({} leader losses)",
                pooled.failovers_ms.len()
            ),
            "failover time (ms of virtual time)",
            &[("failover".into(), pooled.failovers_ms.clone())],
        )?;
    }
    print!("{text}");
    Ok(pooled.violations.is_empty())
}
