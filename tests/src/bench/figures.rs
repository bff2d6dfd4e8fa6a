//! The figures one run measured, saved as JSON (one file per target), and
//! the comparison table of several targets: every figure of the baseline
//! target (vomesh) next to each peer's, with the ratio baseline / peer.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

/// Which way a figure is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Context (load generator CPU, counts): no winner.
    Neither,
}

impl Better {
    fn as_str(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
            Better::Neither => "-",
        }
    }

    fn parse(text: &str) -> Better {
        match text {
            "higher" => Better::Higher,
            "lower" => Better::Lower,
            _ => Better::Neither,
        }
    }
}

/// One measured figure of a scenario.
#[derive(Debug, Clone)]
pub struct Figure {
    pub scenario: String,
    pub name: String,
    pub value: f64,
    pub better: Better,
}

/// Every figure of one target's run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub label: String,
    /// Free-form lines: machine, load, parameters, failures.
    pub notes: Vec<String>,
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn new(label: &str) -> Report {
        Report {
            label: label.to_owned(),
            ..Report::default()
        }
    }

    /// Records a figure and prints it as it is measured.
    pub fn add(&mut self, scenario: &str, name: &str, value: f64, better: Better) {
        println!("  {scenario:<12} {name:<44} {}", format_value(value));
        self.figures.push(Figure {
            scenario: scenario.to_owned(),
            name: name.to_owned(),
            value,
            better,
        });
    }

    pub fn note(&mut self, line: String) {
        println!("  note: {line}");
        self.notes.push(line);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "label": self.label,
            "notes": self.notes,
            "figures": self.figures.iter().map(|f| json!({
                "scenario": f.scenario,
                "name": f.name,
                "value": f.value,
                "better": f.better.as_str(),
            })).collect::<Vec<_>>(),
        })
    }

    pub fn from_json(value: &Value) -> anyhow::Result<Report> {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        Ok(Report {
            label: text(&value["label"]).context("a label")?,
            notes: value["notes"]
                .as_array()
                .map(|notes| notes.iter().filter_map(text).collect())
                .unwrap_or_default(),
            figures: value["figures"]
                .as_array()
                .context("figures")?
                .iter()
                .map(|f| {
                    Some(Figure {
                        scenario: text(&f["scenario"])?,
                        name: text(&f["name"])?,
                        // JSON has no NaN: an undefined figure is saved as null.
                        value: f["value"].as_f64().unwrap_or(f64::NAN),
                        better: Better::parse(f["better"].as_str()?),
                    })
                })
                .collect::<Option<_>>()
                .context("a figure lacks a field")?,
        })
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    pub fn load(path: &Path) -> anyhow::Result<Report> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Report::from_json(&serde_json::from_str(&text)?)
            .with_context(|| format!("{} is not a benchmark report", path.display()))
    }

    fn value(&self, scenario: &str, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.scenario == scenario && f.name == name)
            .map(|f| f.value)
    }
}

/// A Markdown table: one row per figure of `baseline`, a column per
/// report, then the ratio baseline / peer for each other report; a ratio
/// is marked ✓ where the baseline is the better of the two.
pub fn comparison_table(baseline: &Report, reports: &[Report]) -> String {
    let peers: Vec<&Report> = reports
        .iter()
        .filter(|r| r.label != baseline.label)
        .collect();
    let mut out = String::new();
    let _ = write!(out, "| scenario | figure | better | {}", baseline.label);
    for peer in &peers {
        let _ = write!(out, " | {}", peer.label);
    }
    for peer in &peers {
        let _ = write!(out, " | {} / {}", baseline.label, peer.label);
    }
    out.push_str(" |\n|---|---|---|---:");
    for _ in 0..peers.len() * 2 {
        out.push_str("|---:");
    }
    out.push_str("|\n");
    for figure in &baseline.figures {
        let _ = write!(
            out,
            "| {} | {} | {} | {}",
            figure.scenario,
            figure.name,
            figure.better.as_str(),
            format_value(figure.value)
        );
        for peer in &peers {
            let value = peer.value(&figure.scenario, &figure.name);
            let _ = write!(out, " | {}", value.map_or("–".into(), format_value));
        }
        for peer in &peers {
            let ratio = peer
                .value(&figure.scenario, &figure.name)
                .map(|value| ratio(figure.value, value, figure.better));
            let _ = write!(out, " | {}", ratio.unwrap_or_else(|| "–".into()));
        }
        out.push_str(" |\n");
    }
    out
}

/// `ours / theirs`, with a ✓ when ours is the better value.
fn ratio(ours: f64, theirs: f64, better: Better) -> String {
    if !ours.is_finite() || !theirs.is_finite() {
        return "–".into();
    }
    let wins = match better {
        Better::Higher => ours > theirs,
        Better::Lower => ours < theirs,
        Better::Neither => false,
    };
    let mark = if wins { " ✓" } else { "" };
    if theirs == 0.0 {
        return if ours == 0.0 {
            format!("={mark}")
        } else {
            format!("∞{mark}")
        };
    }
    let r = ours / theirs;
    if r >= 100.0 {
        format!("{r:.0}{mark}")
    } else if r >= 10.0 {
        format!("{r:.1}{mark}")
    } else {
        format!("{r:.2}{mark}")
    }
}

/// A value for tables: integers without decimals, small values with more.
pub fn format_value(value: f64) -> String {
    if !value.is_finite() {
        // A rate or a cost per operation when nothing was done.
        return "–".into();
    }
    if (value.fract() == 0.0 && value.abs() < 1e15) || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(label: &str, figures: &[(&str, f64, Better)]) -> Report {
        let mut report = Report::new(label);
        for (name, value, better) in figures {
            report.figures.push(Figure {
                scenario: "s".into(),
                name: (*name).into(),
                value: *value,
                better: *better,
            });
        }
        report
    }

    #[test]
    fn ratio_is_ours_over_theirs_marked_when_ours_is_better() {
        assert_eq!(ratio(800.0, 160.0, Better::Higher), "5.00 ✓");
        assert_eq!(ratio(10.0, 2800.0, Better::Lower), "0.00 ✓");
        assert_eq!(ratio(40.0, 20.0, Better::Lower), "2.00");
        assert_eq!(ratio(5.0, 0.0, Better::Higher), "∞ ✓");
        assert_eq!(ratio(0.0, 0.0, Better::Lower), "=");
        assert_eq!(ratio(5.0, f64::NAN, Better::Higher), "–");
    }

    #[test]
    fn a_report_survives_its_json_form() {
        let mut original = report("vomesh", &[("rate", 812.5, Better::Higher)]);
        original.notes.push("2 cores".into());
        original.figures.push(Figure {
            scenario: "s".into(),
            name: "cost".into(),
            value: f64::NAN,
            better: Better::Lower,
        });
        let back = Report::from_json(&original.to_json()).unwrap();
        assert_eq!(back.label, "vomesh");
        assert_eq!(back.notes, ["2 cores"]);
        assert_eq!(back.value("s", "rate"), Some(812.5));
        assert_eq!(back.figures[0].better, Better::Higher);
        assert!(back.value("s", "cost").is_some_and(f64::is_nan));
    }

    #[test]
    fn the_table_has_a_column_and_a_ratio_per_peer() {
        let ours = report("vomesh", &[("rate", 800.0, Better::Higher)]);
        let prosody = report("prosody", &[("rate", 5.0, Better::Higher)]);
        let ejabberd = report("ejabberd", &[]);
        let table = comparison_table(&ours, &[ours.clone(), prosody, ejabberd]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| scenario | figure | better | vomesh | prosody | ejabberd | vomesh / prosody | vomesh / ejabberd |"
        );
        assert_eq!(lines[2], "| s | rate | higher | 800 | 5 | – | 160 ✓ | – |");
    }
}
