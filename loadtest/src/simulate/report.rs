//! What a simulation comes to: per policy, the bytes, 95th-percentile bandwidth and cost of
//! each site, overflows and refusals; the busiest minute; per client group, the bytes; and the
//! series behind them. Written as a text summary, JSON, CSV and plots.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::timeline::{Cell, percentile_95};
use super::{MINUTE, Setup, SimulateError, Simulation};
use crate::clock::rfc3339;
use crate::plot::{self, Line, Panel};

/// The groups a plot shows by name; the others add up as one line.
const PLOTTED_GROUPS: usize = 7;

#[derive(Debug, Serialize)]
pub struct Report {
    pub log: LogSummary,
    pub bucket_seconds: i64,
    /// The start of the first bucket and the end of the last.
    pub start: Option<String>,
    pub end: Option<String>,
    pub busiest_minute: Option<Busiest>,
    pub policies: Vec<PolicyReport>,
    /// By bytes, most first.
    pub groups: Vec<GroupReport>,
    #[serde(skip)]
    pub series: Series,
}

#[derive(Debug, Serialize)]
pub struct LogSummary {
    pub path: PathBuf,
    pub format: &'static str,
    pub lines: u64,
    pub records: u64,
    /// Body bytes over every record of the log.
    pub bytes: u64,
    pub bad_lines: u64,
    pub first_bad_lines: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Busiest {
    pub start: String,
    pub requests: u64,
    pub bytes: u64,
    pub mbps: f64,
}

#[derive(Debug, Serialize)]
pub struct PolicyReport {
    pub policy: &'static str,
    pub sites: Vec<SiteReport>,
    /// Bytes over all sites: the log's bytes less the refused.
    pub bytes: u64,
    pub cost: f64,
    /// Requests that no site could take (every site full).
    pub refused: Cell,
    pub overflows: OverflowReport,
}

#[derive(Debug, Serialize)]
pub struct SiteReport {
    pub site: String,
    pub requests: u64,
    pub bytes: u64,
    /// The 95th percentile of the buckets' bandwidth, as CDNs bill.
    pub p95_mbps: f64,
    pub peak_mbps: f64,
    /// Bytes in GB (10^9) times the site's cost_per_gb.
    pub cost: f64,
}

#[derive(Debug, Serialize)]
pub struct OverflowReport {
    pub requests: u64,
    pub bytes: u64,
    pub moves: Vec<Move>,
}

#[derive(Debug, Serialize)]
pub struct Move {
    pub from: String,
    pub to: String,
    pub requests: u64,
}

#[derive(Debug, Serialize)]
pub struct GroupReport {
    pub group: String,
    pub requests: u64,
    pub bytes: u64,
    /// Bytes per site, per policy.
    pub sites: Vec<GroupSites>,
}

#[derive(Debug, Serialize)]
pub struct GroupSites {
    pub policy: &'static str,
    pub bytes: Vec<(String, u64)>,
}

/// The buckets, per policy and site and per group.
#[derive(Debug, Default, Serialize)]
pub struct Series {
    pub bucket_seconds: i64,
    /// Each bucket's start, in seconds since the epoch.
    pub starts: Vec<i64>,
    pub policies: Vec<PolicySeries>,
    /// In the order of the report's groups.
    pub groups: Vec<NamedSeries>,
}

#[derive(Debug, Serialize)]
pub struct PolicySeries {
    pub policy: &'static str,
    pub sites: Vec<NamedSeries>,
}

#[derive(Debug, Serialize)]
pub struct NamedSeries {
    pub name: String,
    pub requests: Vec<u64>,
    pub bytes: Vec<u64>,
}

impl NamedSeries {
    fn mbps(&self, bucket: i64) -> Vec<f64> {
        self.bytes
            .iter()
            .map(|&bytes| Cell { requests: 0, bytes }.mbps(bucket))
            .collect()
    }
}

impl Report {
    pub fn new(setup: &Setup, log: &Path, simulation: Simulation<'_>) -> Report {
        let bucket = setup.bucket;
        let sites = &setup.router.sites;
        let span = simulation.sites.span();
        let starts: Vec<i64> = span
            .map(|(first, last)| (first..=last).map(|b| b * bucket).collect())
            .unwrap_or_default();
        let cells = |bucket_index: i64| simulation.sites.get(bucket_index).unwrap_or_default();
        let mut series = Series {
            bucket_seconds: bucket,
            starts: starts.clone(),
            policies: Vec::new(),
            groups: Vec::new(),
        };
        let mut policies = Vec::new();
        for (choice_index, choice) in setup.choices.iter().enumerate() {
            let mut named = Vec::new();
            let mut reports = Vec::new();
            for (site_index, site) in sites.iter().enumerate() {
                let column = choice_index * sites.len() + site_index;
                let (mut requests, mut bytes) = (Vec::new(), Vec::new());
                for &start in &starts {
                    let cell = cells(start / bucket)
                        .get(column)
                        .copied()
                        .unwrap_or_default();
                    requests.push(cell.requests);
                    bytes.push(cell.bytes);
                }
                let line = NamedSeries {
                    name: site.name.clone(),
                    requests,
                    bytes,
                };
                let mbps = line.mbps(bucket);
                let total: u64 = line.bytes.iter().sum();
                reports.push(SiteReport {
                    site: site.name.clone(),
                    requests: line.requests.iter().sum(),
                    bytes: total,
                    p95_mbps: percentile_95(&mbps),
                    peak_mbps: mbps.iter().copied().fold(0.0, f64::max),
                    cost: total as f64 / 1e9 * site.cost_per_gb,
                });
                named.push(line);
            }
            let overflows = &simulation.overflows[choice_index];
            let mut moves = Vec::new();
            for (from, from_site) in sites.iter().enumerate() {
                for (to, to_site) in sites.iter().enumerate() {
                    let requests = overflows.moves[from * sites.len() + to];
                    if requests > 0 {
                        moves.push(Move {
                            from: from_site.name.clone(),
                            to: to_site.name.clone(),
                            requests,
                        });
                    }
                }
            }
            policies.push(PolicyReport {
                policy: choice.name(),
                bytes: reports.iter().map(|r| r.bytes).sum(),
                cost: reports.iter().map(|r| r.cost).sum(),
                sites: reports,
                refused: simulation.refused[choice_index],
                overflows: OverflowReport {
                    requests: overflows.requests,
                    bytes: overflows.bytes,
                    moves,
                },
            });
            series.policies.push(PolicySeries {
                policy: choice.name(),
                sites: named,
            });
        }
        let mut groups: Vec<(GroupReport, NamedSeries)> = simulation
            .groups
            .iter()
            .map(|group| {
                let (mut requests, mut bytes) = (Vec::new(), Vec::new());
                for &start in &starts {
                    let cell = group
                        .timeline
                        .get(start / bucket)
                        .map_or(Cell::default(), |cells| cells[0]);
                    requests.push(cell.requests);
                    bytes.push(cell.bytes);
                }
                let report = GroupReport {
                    group: group.name.clone(),
                    requests: requests.iter().sum(),
                    bytes: bytes.iter().sum(),
                    sites: setup
                        .choices
                        .iter()
                        .enumerate()
                        .map(|(choice_index, choice)| GroupSites {
                            policy: choice.name(),
                            bytes: sites
                                .iter()
                                .enumerate()
                                .map(|(site_index, site)| {
                                    let column = choice_index * sites.len() + site_index;
                                    (site.name.clone(), group.by_site[column])
                                })
                                .collect(),
                        })
                        .collect(),
                };
                let line = NamedSeries {
                    name: group.name.clone(),
                    requests,
                    bytes,
                };
                (report, line)
            })
            .collect();
        groups.sort_by(|(a, _), (b, _)| b.bytes.cmp(&a.bytes).then(a.group.cmp(&b.group)));
        let (groups, group_series): (Vec<GroupReport>, Vec<NamedSeries>) =
            groups.into_iter().unzip();
        series.groups = group_series;
        let busiest = simulation.minutes.span().and_then(|(first, last)| {
            (first..=last)
                .filter_map(|minute| Some((minute, simulation.minutes.get(minute)?[0])))
                .max_by_key(|(minute, cell)| (cell.bytes, std::cmp::Reverse(*minute)))
                .map(|(minute, cell)| Busiest {
                    start: rfc3339(minute * MINUTE),
                    requests: cell.requests,
                    bytes: cell.bytes,
                    mbps: cell.mbps(MINUTE),
                })
        });
        let tally = &simulation.tally;
        Report {
            log: LogSummary {
                path: log.to_owned(),
                format: simulation.format.as_str(),
                lines: tally.lines,
                records: tally.records,
                bytes: tally.bytes,
                bad_lines: tally.bad,
                first_bad_lines: tally.first_bad.iter().map(ToString::to_string).collect(),
            },
            bucket_seconds: bucket,
            start: starts.first().map(|&start| rfc3339(start)),
            end: starts.last().map(|&start| rfc3339(start + bucket)),
            busiest_minute: busiest,
            policies,
            groups,
            series,
        }
    }

    /// The summary as text, the policies side by side.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let log = &self.log;
        let _ = writeln!(
            out,
            "log {} ({}): {} lines, {} requests, {} bad lines",
            log.path.display(),
            log.format,
            log.lines,
            log.records,
            log.bad_lines
        );
        for bad in &log.first_bad_lines {
            let _ = writeln!(out, "  bad {bad}");
        }
        if let (Some(start), Some(end)) = (&self.start, &self.end) {
            let _ = writeln!(
                out,
                "from {start} to {end}, in buckets of {} s",
                self.bucket_seconds
            );
        }
        if let Some(busiest) = &self.busiest_minute {
            let _ = writeln!(
                out,
                "busiest minute: {}, {} requests, {} bytes ({:.3} Mbit/s)",
                busiest.start, busiest.requests, busiest.bytes, busiest.mbps
            );
        }
        let mut table: Vec<Vec<String>> = Vec::new();
        let mut header = vec![String::new()];
        header.extend(self.policies.iter().map(|p| p.policy.to_owned()));
        table.push(header);
        let sites = self.policies.first().map_or(0, |p| p.sites.len());
        for site in 0..sites {
            let name = &self.policies[0].sites[site].site;
            let row = |label: &str, value: &dyn Fn(&SiteReport) -> String| {
                let mut row = vec![format!("{name} {label}")];
                row.extend(self.policies.iter().map(|p| value(&p.sites[site])));
                row
            };
            table.push(row("bytes", &|s| s.bytes.to_string()));
            table.push(row("requests", &|s| s.requests.to_string()));
            table.push(row("p95 Mbit/s", &|s| format!("{:.3}", s.p95_mbps)));
            table.push(row("peak Mbit/s", &|s| format!("{:.3}", s.peak_mbps)));
            table.push(row("cost", &|s| format!("{:.4}", s.cost)));
        }
        let row = |label: &str, value: &dyn Fn(&PolicyReport) -> String| {
            let mut row = vec![label.to_owned()];
            row.extend(self.policies.iter().map(value));
            row
        };
        table.push(row("bytes, all sites", &|p| p.bytes.to_string()));
        table.push(row("bytes, refused", &|p| p.refused.bytes.to_string()));
        table.push(row("bytes in the log", &|_| log.bytes.to_string()));
        table.push(row("sites + refused = log", &|p| {
            if p.bytes + p.refused.bytes == log.bytes {
                "yes"
            } else {
                "NO"
            }
            .to_owned()
        }));
        table.push(row("cost, all sites", &|p| format!("{:.4}", p.cost)));
        table.push(row("overflow requests", &|p| {
            p.overflows.requests.to_string()
        }));
        table.push(row("overflow bytes", &|p| p.overflows.bytes.to_string()));
        let widths: Vec<usize> = (0..table[0].len())
            .map(|column| table.iter().map(|row| row[column].len()).max().unwrap_or(0))
            .collect();
        for row in &table {
            for (column, cell) in row.iter().enumerate() {
                if column == 0 {
                    let _ = write!(out, "{cell:<width$}", width = widths[0]);
                } else {
                    let _ = write!(out, "  {cell:>width$}", width = widths[column]);
                }
            }
            out.push('\n');
        }
        for policy in &self.policies {
            for step in &policy.overflows.moves {
                let _ = writeln!(
                    out,
                    "{}: {} requests overflowed from {} to {}",
                    policy.policy, step.requests, step.from, step.to
                );
            }
        }
        out
    }
}

/// Writes summary.txt, summary.json, series.json, sites.csv, groups.csv and the plots
/// (sites.png, sites.svg, groups.png, groups.svg) into `out`.
pub fn write_outputs(report: &Report, out: &Path, font: &Path) -> Result<(), SimulateError> {
    let write = |name: &str, contents: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, contents).map_err(|source| SimulateError::Write {
            what: "writing",
            path,
            source,
        })
    };
    std::fs::create_dir_all(out).map_err(|source| SimulateError::Write {
        what: "creating the output folder",
        path: out.to_owned(),
        source,
    })?;
    write("summary.txt", report.text().as_bytes())?;
    write("summary.json", &pretty_json(report))?;
    // The series are long arrays of numbers: one line, not one number a line.
    let series = serde_json::to_vec(&report.series).expect("plain data serializes");
    write("series.json", &series)?;
    write("sites.csv", &sites_csv(&report.series))?;
    write("groups.csv", &groups_csv(&report.series))?;
    plots(report, out, font)
}

fn pretty_json(value: &impl Serialize) -> Vec<u8> {
    let mut text = serde_json::to_vec_pretty(value).expect("plain data serializes");
    text.push(b'\n');
    text
}

fn sites_csv(series: &Series) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = writeln!(out, "policy,start,unix_seconds,site,requests,bytes,mbps");
    for policy in &series.policies {
        for (index, &start) in series.starts.iter().enumerate() {
            for site in &policy.sites {
                let cell = Cell {
                    requests: site.requests[index],
                    bytes: site.bytes[index],
                };
                let _ = writeln!(
                    out,
                    "{},{},{start},{},{},{},{:.6}",
                    policy.policy,
                    rfc3339(start),
                    csv_field(&site.name),
                    cell.requests,
                    cell.bytes,
                    cell.mbps(series.bucket_seconds)
                );
            }
        }
    }
    out
}

fn groups_csv(series: &Series) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = writeln!(out, "start,unix_seconds,group,requests,bytes,mbps");
    for (index, &start) in series.starts.iter().enumerate() {
        for group in &series.groups {
            let cell = Cell {
                requests: group.requests[index],
                bytes: group.bytes[index],
            };
            if cell.requests > 0 {
                let _ = writeln!(
                    out,
                    "{},{start},{},{},{},{:.6}",
                    rfc3339(start),
                    csv_field(&group.name),
                    cell.requests,
                    cell.bytes,
                    cell.mbps(series.bucket_seconds)
                );
            }
        }
    }
    out
}

/// Quotes a field that holds a comma or a quote.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn plots(report: &Report, out: &Path, font: &Path) -> Result<(), SimulateError> {
    let series = &report.series;
    let bucket = series.bucket_seconds;
    let panels: Vec<Panel> = series
        .policies
        .iter()
        .map(|policy| Panel {
            title: format!("policy {}", policy.policy),
            lines: policy
                .sites
                .iter()
                .map(|site| Line {
                    name: site.name.clone(),
                    mbps: site.mbps(bucket),
                })
                .collect(),
        })
        .collect();
    let mut groups: Vec<Line> = series
        .groups
        .iter()
        .take(PLOTTED_GROUPS)
        .map(|group| Line {
            name: group.name.clone(),
            mbps: group.mbps(bucket),
        })
        .collect();
    if series.groups.len() > PLOTTED_GROUPS {
        let mut rest = vec![0.0; series.starts.len()];
        for group in &series.groups[PLOTTED_GROUPS..] {
            for (sum, mbps) in rest.iter_mut().zip(group.mbps(bucket)) {
                *sum += mbps;
            }
        }
        groups.push(Line {
            name: format!("{} other groups", series.groups.len() - PLOTTED_GROUPS),
            mbps: rest,
        });
    }
    let groups = [Panel {
        title: "all policies (groups do not depend on them)".to_owned(),
        lines: groups,
    }];
    let plot_error =
        |path: PathBuf| move |source: plot::PlotError| SimulateError::Plot { path, source };
    plot::register_font(font).map_err(plot_error(font.to_owned()))?;
    for extension in ["png", "svg"] {
        let path = out.join(format!("sites.{extension}"));
        plot::bandwidth(&path, "Bandwidth per site", &series.starts, bucket, &panels)
            .map_err(plot_error(path.clone()))?;
        let path = out.join(format!("groups.{extension}"));
        plot::bandwidth(
            &path,
            "Bandwidth per client group",
            &series.starts,
            bucket,
            &groups,
        )
        .map_err(plot_error(path.clone()))?;
    }
    Ok(())
}
