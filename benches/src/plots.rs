//! The two result plots (`--plots DIR`), drawn from the run's own tables with plotters' SVG
//! backend:
//!
//! * `chain.svg`: chain loop time (median µs per run) against `n`, log–log, one line per
//!   peer, one panel for `a = 1` (per-iteration cost) and one for `a = 100` (per-event cost);
//! * `timers.svg`: ns per timer for schedule / re-arm / cancel / fire, one bar per peer, one
//!   panel per `N` (random timeouts).
//!
//! A plot whose workload did not run, or has too few points, is skipped with a message.

use std::path::Path;

use plotters::prelude::*;

use crate::harness::Report;

/// Peer colours, by position in the workload's peer list (ioloop first, in a strong red).
const COLORS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(127, 127, 127),
];

/// The peers of a report, in first-seen order.
fn peers(r: &Report) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    for row in &r.rows {
        if !v.contains(&row.peer) {
            v.push(row.peer);
        }
    }
    v
}

/// The median of `peer` in `case`, if measured.
fn median(r: &Report, case: &str, peer: &str) -> Option<f64> {
    r.rows
        .iter()
        .find(|row| row.case == case && row.peer == peer)
        .and_then(|row| row.stats)
        .map(|s| s.p50)
}

/// Writes every plot whose data is in `reports`; returns one line per plot (written or why
/// not).
pub fn write_all(reports: &[Report], dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Err(e) = std::fs::create_dir_all(dir) {
        out.push(format!("plots: cannot create {}: {e}", dir.display()));
        return out;
    }
    let find = |name| reports.iter().find(|r| r.name == name);
    let plots: [(&str, Plot); 2] = [("chain", chain), ("timers", timers)];
    for (name, plot) in plots {
        out.push(match find(name) {
            Some(r) => {
                let path = dir.join(format!("{name}.svg"));
                match plot(r, &path) {
                    Ok(()) => format!("wrote {}", path.display()),
                    Err(e) => format!("{name}.svg not written: {e}"),
                }
            }
            None => format!("{name}.svg not written: {name} did not run"),
        });
    }
    out
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// An SVG drawing area.
type Canvas<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// `n=100 a=1 loop` → `(100, 1)`.
/// Draws one workload's report into an SVG file.
type Plot = fn(&Report, &Path) -> PlotResult;

fn chain_case(case: &str) -> Option<(f64, usize)> {
    let mut it = case.split_whitespace();
    let n = it.next()?.strip_prefix("n=")?.parse().ok()?;
    let a = it.next()?.strip_prefix("a=")?.parse().ok()?;
    (it.next()? == "loop").then_some((n, a))
}

/// A 1100×480 SVG at `path`, white, with `title` across the top: the whole drawing area
/// (to `present`) and the part below the title.
fn titled_canvas<'a>(
    path: &'a Path,
    title: &str,
) -> Result<(Canvas<'a>, Canvas<'a>), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(40);
    head.titled(title, ("sans-serif", 20))?;
    Ok((root, body))
}

/// The series legend both plots draw, at `position`.
fn draw_legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> PlotResult {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

fn chain(r: &Report, path: &Path) -> PlotResult {
    let mut ns: Vec<f64> = r
        .rows
        .iter()
        .filter_map(|row| chain_case(&row.case))
        .map(|(n, _)| n)
        .collect();
    ns.sort_by(f64::total_cmp);
    ns.dedup();
    if ns.len() < 2 {
        return Err("fewer than two sizes of n (run without --quick, or with more sizes)".into());
    }
    let peers = peers(r);
    let (root, body) = titled_canvas(path,        "chain: dispatch time per run vs n (libevent bench.c, 1000 writes; median, lower is faster)")?;
    let panels = body.split_evenly((1, 2));
    for (panel, a) in panels.iter().zip([1usize, 100]) {
        let series: Vec<(&str, Vec<(f64, f64)>)> = peers
            .iter()
            .map(|&p| {
                let pts = ns
                    .iter()
                    .filter_map(|&n| {
                        let case = r
                            .rows
                            .iter()
                            .find(|row| chain_case(&row.case) == Some((n, a)))?
                            .case
                            .clone();
                        median(r, &case, p).map(|m| (n, m))
                    })
                    .collect();
                (p, pts)
            })
            .collect();
        let hi = series
            .iter()
            .flat_map(|(_, v)| v.iter().map(|p| p.1))
            .fold(0f64, f64::max);
        if hi <= 0.0 {
            continue;
        }
        // n on a log axis; time on a linear axis from zero, so gaps read as proportions.
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("a = {a} active"), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (ns[0] * 0.8..ns[ns.len() - 1] * 1.25)
                    .log_scale()
                    .with_key_points(ns.clone()),
                0f64..hi * 1.15,
            )?;
        chart
            .configure_mesh()
            .x_desc("n (socketpairs)")
            .y_desc("µs per run")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (i, (name, pts)) in series.into_iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let width = if i == 0 { 3 } else { 2 };
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
                });
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    }
    root.present()?;
    Ok(())
}

const PHASES: [&str; 4] = ["schedule", "rearm", "cancel", "fire"];

fn timers(r: &Report, path: &Path) -> PlotResult {
    // "random N=1e5 schedule" → the N labels present, in order.
    let mut sizes: Vec<String> = Vec::new();
    for row in &r.rows {
        let mut it = row.case.split_whitespace();
        if it.next() != Some("random") {
            continue;
        }
        if let Some(n) = it.next() {
            if !sizes.iter().any(|s| s == n) {
                sizes.push(n.to_owned());
            }
        }
    }
    if sizes.is_empty() {
        return Err("no random-timeout cases".into());
    }
    let peers = peers(r);
    let (root, body) = titled_canvas(
        path,
        "timers: ns per timer by phase (random 10–20 s timeouts; median, lower is faster)",
    )?;
    let panels = body.split_evenly((1, sizes.len()));
    for (panel, size) in panels.iter().zip(&sizes) {
        let value = |phase: &str, peer: &str| median(r, &format!("random {size} {phase}"), peer);
        let hi = PHASES
            .iter()
            .flat_map(|ph| peers.iter().filter_map(move |p| value(ph, p)))
            .fold(0f64, f64::max);
        if hi <= 0.0 {
            continue;
        }
        let mut chart = ChartBuilder::on(panel)
            .caption(size.replace("N=", "N = "), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..3.5f64, 0f64..hi * 1.3)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(4)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && (0.0..4.0).contains(&i) {
                    PHASES[i as usize].to_owned()
                } else {
                    String::new()
                }
            })
            .y_desc("ns per timer")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let w = 0.8 / peers.len() as f64;
        for (k, &peer) in peers.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let bars: Vec<_> = PHASES
                .iter()
                .enumerate()
                .filter_map(|(i, ph)| {
                    let v = value(ph, peer)?;
                    let x0 = i as f64 - 0.4 + k as f64 * w;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + w * 0.92, v)],
                        color.filled(),
                    ))
                })
                .collect();
            chart.draw_series(bars)?.label(peer).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled())
            });
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Role;

    #[test]
    fn parses_chain_cases() {
        assert_eq!(chain_case("n=100 a=1 loop"), Some((100.0, 1)));
        assert_eq!(chain_case("n=100 a=1 total"), None);
    }

    /// Both plots render from small synthetic tables into well-formed SVG.
    #[test]
    fn writes_svg() {
        let mut chain = Report::new("chain", String::new(), "µs/run");
        let mut timers = Report::new("timers", String::new(), "ns/timer");
        for n in [100, 1000, 10_000] {
            for a in [1, 100] {
                chain.push(
                    &format!("n={n} a={a} loop"),
                    "ioloop",
                    Role::Ioloop,
                    vec![n as f64],
                );
                chain.push(
                    &format!("n={n} a={a} loop"),
                    "mio",
                    Role::Peer,
                    vec![n as f64 * 0.9],
                );
            }
        }
        for size in ["1e5", "1e6"] {
            for ph in PHASES {
                let case = format!("random N={size} {ph}");
                timers.push(&case, "ioloop", Role::Ioloop, vec![50.0]);
                timers.push(&case, "tokio", Role::Peer, vec![40.0]);
            }
        }
        let dir = std::env::temp_dir().join(format!("ioloop-bench-plots-{}", std::process::id()));
        let msgs = write_all(&[chain, timers], &dir);
        assert!(msgs.iter().all(|m| m.starts_with("wrote")), "{msgs:?}");
        for f in ["chain.svg", "timers.svg"] {
            let svg = std::fs::read_to_string(dir.join(f)).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{f}"
            );
            assert!(svg.contains("ioloop"), "{f}: legend");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
