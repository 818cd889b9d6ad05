//! The shared machinery: peers, samples, statistics, the text tables and the JSON file.
//!
//! Every workload is a list of [`Peer`]s, each a plain function from the workload's case to its
//! samples. The harness runs every peer on every case in the same process, turns the samples
//! into [`Stats`], and prints one table per workload with a ratio column relative to the
//! reference peer of each case (ioloop when it is plugged in, else the floor).

use std::fmt::Write as _;
use std::io;
use std::time::Instant;

/// What a peer is there for, which decides what the ratios are relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// ioloop itself: the reference for the ratio column when present.
    Ioloop,
    /// The hand-written lower bound (raw syscalls, no abstraction): the reference when ioloop
    /// is not plugged in.
    Floor,
    /// Another library, measured as its users would use it.
    Peer,
}

/// One implementation of a workload: `run` does the whole case (setup, warm-up, timed
/// iterations, teardown) and returns its samples.
pub struct Peer<C, S> {
    /// Short name printed in the tables.
    pub name: &'static str,
    /// Reference, floor or ordinary peer.
    pub role: Role,
    /// Runs one case.
    pub run: fn(&C) -> io::Result<S>,
}

impl<C, S> Peer<C, S> {
    /// The reference peer: ioloop itself, named "ioloop".
    pub const fn ioloop(run: fn(&C) -> io::Result<S>) -> Self {
        Self::new("ioloop", Role::Ioloop, run)
    }

    /// A peer named `name` in `role`, run by `run`.
    pub const fn new(name: &'static str, role: Role, run: fn(&C) -> io::Result<S>) -> Self {
        Self { name, role, run }
    }
}

/// Summary of a sample set. Percentiles are nearest-rank on the sorted samples.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// How many samples.
    pub n: usize,
    /// Smallest sample.
    pub min: f64,
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

impl Stats {
    /// Summarises `samples` (sorted in place). `None` for an empty set.
    pub fn of(samples: &mut [f64]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let pick = |p: f64| {
            // Nearest rank: the smallest sample with at least p% of the samples at or below it.
            let rank = (p / 100.0 * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Some(Stats {
            n: samples.len(),
            min: samples[0],
            p10: pick(10.0),
            p50: pick(50.0),
            p90: pick(90.0),
            p99: pick(99.0),
            max: samples[samples.len() - 1],
        })
    }
}

/// A peer's samples for one case, one entry per timed iteration.
pub trait Samples: Sized {
    /// Drops the first `k` iterations (the warm-up of a fresh setup).
    fn drop_warmup(&mut self, k: usize);
    /// Appends the samples of a later round.
    fn append(&mut self, other: Self);
}

impl Samples for Vec<f64> {
    fn drop_warmup(&mut self, k: usize) {
        self.drain(..k.min(self.len()));
    }

    fn append(&mut self, mut other: Self) {
        Vec::append(self, &mut other);
    }
}

/// Runs every peer on `case` in `rounds` rounds, rotating the order each round, and merges each
/// peer's samples (dropping the first `warmup` iterations of every call, since each call sets
/// up afresh).
///
/// Interleaving matters on a shared 2-core machine: a slow minute (another build, a noisy
/// neighbour) then lands on every peer instead of on whichever happened to run in it, so the
/// ratios stay meaningful even when the absolute numbers drift. `between` runs before every
/// call (untimed), for cleanup such as draining sockets.
pub fn run_rounds<C, S: Samples>(
    peers: &[Peer<C, S>],
    case: &C,
    rounds: usize,
    warmup: usize,
    mut between: impl FnMut(),
) -> Vec<io::Result<S>> {
    let mut acc: Vec<Option<io::Result<S>>> = peers.iter().map(|_| None).collect();
    for round in 0..rounds {
        for k in 0..peers.len() {
            let i = (round + k) % peers.len();
            if matches!(acc[i], Some(Err(_))) {
                continue;
            }
            between();
            let r = (peers[i].run)(case).map(|mut s| {
                s.drop_warmup(warmup);
                s
            });
            acc[i] = match (acc[i].take(), r) {
                (Some(Ok(mut a)), Ok(s)) => {
                    a.append(s);
                    Some(Ok(a))
                }
                (_, r) => Some(r),
            };
        }
    }
    acc.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("not run"))))
        .collect()
}

/// One line of a workload's table.
pub struct Row {
    /// The case (workload parameters and, where a case has several timed phases, the phase).
    pub case: String,
    /// The peer's name.
    pub peer: &'static str,
    /// The peer's role.
    pub role: Role,
    /// The samples' summary, or `None` when the peer has no number for this case.
    pub stats: Option<Stats>,
    /// Why there is no number, or a caveat that belongs next to the number.
    pub note: Option<String>,
}

/// The results of one workload, ready to print.
pub struct Report {
    /// Short name (`--only` key).
    pub name: &'static str,
    /// One-line description for the table header.
    pub title: String,
    /// The unit of every number in the table ("µs/run", "ns/timer", ...).
    pub unit: &'static str,
    /// Whether to add a p99 column (latency distributions).
    pub show_p99: bool,
    /// How to read the ratio, printed in the header ("lower is faster" unless set).
    pub better: &'static str,
    /// Free-form lines printed under the table.
    pub notes: Vec<String>,
    /// The rows, grouped by case in insertion order.
    pub rows: Vec<Row>,
    /// The anchor peer of a case (by name), when the table has one (libev for timers, the
    /// floor for chain loop time, ...): the ratio column is then every row's median over the
    /// anchor's, so ioloop's row reads "ioloop / anchor". `None`: ratios to ioloop.
    pub anchor: Option<fn(&str) -> &'static str>,
}

impl Report {
    /// An empty report.
    pub fn new(name: &'static str, title: String, unit: &'static str) -> Report {
        Report {
            name,
            title,
            unit,
            show_p99: false,
            better: "lower is faster",
            notes: Vec::new(),
            rows: Vec::new(),
            anchor: None,
        }
    }

    /// Adds a row from raw samples (already stripped of warm-up).
    pub fn push(&mut self, case: &str, peer: &'static str, role: Role, mut samples: Vec<f64>) {
        let stats = Stats::of(&mut samples);
        self.rows.push(Row {
            case: case.to_owned(),
            peer,
            role,
            stats,
            note: None,
        });
    }

    /// Adds a row without a number.
    pub fn push_missing(&mut self, case: &str, peer: &'static str, role: Role, why: String) {
        self.rows.push(Row {
            case: case.to_owned(),
            peer,
            role,
            stats: None,
            note: Some(why),
        });
    }

    /// The median of the case's reference row and the reference's name: the anchor if the
    /// table has one and it has a number, else ioloop if it has a number, else the floor.
    pub fn reference(&self, case: &str) -> Option<(f64, &'static str)> {
        if let Some(anchor) = self.anchor {
            let name = anchor(case);
            let hit = self
                .rows
                .iter()
                .find(|r| r.case == case && r.peer == name)
                .and_then(|r| r.stats);
            if let Some(s) = hit {
                return Some((s.p50, name));
            }
        }
        let of = |role| {
            self.rows
                .iter()
                .find(|r| r.case == case && r.role == role)
                .and_then(|r| r.stats)
                .map(|s| {
                    (
                        s.p50,
                        if role == Role::Ioloop {
                            "ioloop"
                        } else {
                            "floor"
                        },
                    )
                })
        };
        of(Role::Ioloop).or_else(|| of(Role::Floor))
    }

    /// The ratio of a row's median to its case's reference median.
    pub fn ratio(&self, row: &Row) -> Option<(f64, &'static str)> {
        let s = row.stats?;
        let (r, role) = self.reference(&row.case)?;
        // No ratio of a negative number (an early timer): it would read as "faster".
        (r > 0.0 && s.p50 >= 0.0).then_some((s.p50 / r, role))
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== {}: {} [{}] ==", self.name, self.title, self.unit);
        let _ = writeln!(out, "   machine: {}", crate::sys::machine_line());
        let reference = if self.anchor.is_some() {
            "the case's anchor's (the row marked [anchor]; so ioloop's ratio is ioloop / anchor)"
        } else if self
            .rows
            .iter()
            .any(|r| r.role == Role::Ioloop && r.stats.is_some())
        {
            "ioloop's (the floor's where ioloop has no number)"
        } else {
            "the floor's (ioloop not measured)"
        };
        let _ = writeln!(
            out,
            "   ratio = median / {reference} median in the same case; {}",
            self.better
        );
        let case_w = self
            .rows
            .iter()
            .map(|r| r.case.chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        let peer_w = self
            .rows
            .iter()
            .map(|r| r.peer.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = write!(
            out,
            "{:<case_w$}  {:<peer_w$}  {:>10}  {:>21}",
            "case", "peer", "median", "spread p10–p90"
        );
        if self.show_p99 {
            let _ = write!(out, "  {:>10}", "p99");
        }
        let _ = writeln!(out, "  {:>8}  note", "ratio");
        let mut last_case: Option<&str> = None;
        for row in &self.rows {
            let case = if last_case == Some(row.case.as_str()) {
                ""
            } else {
                row.case.as_str()
            };
            if last_case.is_some() && !case.is_empty() {
                out.push('\n');
            }
            last_case = Some(row.case.as_str());
            let _ = write!(out, "{case:<case_w$}  {:<peer_w$}  ", row.peer);
            match row.stats {
                Some(s) => {
                    let spread = format!("{}–{}", num(s.p10), num(s.p90));
                    let _ = write!(out, "{:>10}  {:>21}", num(s.p50), spread);
                    if self.show_p99 {
                        let _ = write!(out, "  {:>10}", num(s.p99));
                    }
                    match self.ratio(row) {
                        Some((r, _)) => {
                            let _ = write!(out, "  {:>7.2}x", r);
                        }
                        None => {
                            let _ = write!(out, "  {:>8}", "—");
                        }
                    }
                }
                None => {
                    let _ = write!(out, "{:>10}  {:>21}", "—", "—");
                    if self.show_p99 {
                        let _ = write!(out, "  {:>10}", "—");
                    }
                    let _ = write!(out, "  {:>8}", "—");
                }
            }
            if self.anchor.is_some() && self.ratio(row).is_some_and(|(_, to)| to == row.peer) {
                out.push_str("  [anchor]");
            }
            if let Some(note) = &row.note {
                let _ = write!(out, "  {note}");
            }
            out.push('\n');
        }
        for note in &self.notes {
            let _ = writeln!(out, "  * {note}");
        }
        out
    }
}

/// A number with three significant digits, at most.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 || x == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Busy-waits until `deadline` (for sub-millisecond gaps that `thread::sleep` would overshoot).
pub fn spin_until(deadline: Instant) {
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

/// Escapes a string for JSON.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number (finite floats only; anything else becomes `null`).
fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

/// Appends the report's rows to a JSON array body (one object per row).
pub fn json_rows(report: &Report, out: &mut Vec<String>) {
    for row in &report.rows {
        let mut o = String::new();
        let _ = write!(
            o,
            "{{\"workload\":{},\"case\":{},\"peer\":{},\"role\":{},\"unit\":{}",
            json_str(report.name),
            json_str(&row.case),
            json_str(row.peer),
            json_str(match row.role {
                Role::Ioloop => "ioloop",
                Role::Floor => "floor",
                Role::Peer => "peer",
            }),
            json_str(report.unit),
        );
        if let Some(s) = row.stats {
            let _ = write!(
                o,
                ",\"n\":{},\"min\":{},\"p10\":{},\"median\":{},\"p90\":{},\"p99\":{},\"max\":{}",
                s.n,
                json_num(s.min),
                json_num(s.p10),
                json_num(s.p50),
                json_num(s.p90),
                json_num(s.p99),
                json_num(s.max)
            );
        }
        if let Some((r, to)) = report.ratio(row) {
            let _ = write!(
                o,
                ",\"ratio\":{},\"ratio_to\":{}",
                json_num(r),
                json_str(to)
            );
        }
        if let Some(note) = &row.note {
            let _ = write!(o, ",\"note\":{}", json_str(note));
        }
        o.push('}');
        out.push(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = Stats::of(&mut v).unwrap();
        assert_eq!(
            (s.min, s.p10, s.p50, s.p90, s.p99, s.max),
            (1.0, 10.0, 50.0, 90.0, 99.0, 100.0)
        );
        let mut one = [7.0];
        let s = Stats::of(&mut one).unwrap();
        assert_eq!((s.p10, s.p50, s.p99), (7.0, 7.0, 7.0));
        assert!(Stats::of(&mut []).is_none());
    }

    #[test]
    fn ratio_prefers_ioloop_then_floor() {
        let mut r = Report::new("t", "t".into(), "ns");
        r.push("c", "floor", Role::Floor, vec![10.0]);
        r.push("c", "peer", Role::Peer, vec![30.0]);
        assert_eq!(r.ratio(&r.rows[1]).map(|x| x.0), Some(3.0));
        r.push("c", "ioloop", Role::Ioloop, vec![20.0]);
        assert_eq!(r.ratio(&r.rows[1]).map(|x| x.0), Some(1.5));
        assert!(r.render().contains("1.50x"));
    }

    #[test]
    fn ratio_is_to_the_anchor_when_the_table_names_one() {
        let mut r = Report::new("t", "t".into(), "ns");
        r.anchor = Some(|case| if case == "a" { "libev" } else { "missing" });
        r.push("a", "ioloop", Role::Ioloop, vec![30.0]);
        r.push("a", "libev", Role::Peer, vec![20.0]);
        r.push("b", "ioloop", Role::Ioloop, vec![30.0]);
        r.push("b", "floor", Role::Floor, vec![15.0]);
        assert_eq!(r.ratio(&r.rows[0]), Some((1.5, "libev")));
        // No number for the anchor: back to ioloop.
        assert_eq!(r.ratio(&r.rows[3]), Some((0.5, "ioloop")));
        let text = r.render();
        assert!(
            text.contains("1.50x") && text.contains("[anchor]"),
            "{text}"
        );
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }
}
