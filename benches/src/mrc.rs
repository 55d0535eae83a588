//! Miss-ratio curves: hit rate against capacity, for the cache's policy
//! (real replays) and for Belady's MIN, drawn as an SVG with `plotters`.

use crate::optimal;
use crate::replay::{self, RankReport};
use crate::trace::Trace;
use plotters::prelude::*;
use regcache::{Config, Registrar};
use std::path::Path;

/// One point of the curve.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Point {
    /// Capacity in regions.
    pub capacity: usize,
    /// The cache's hit rate at that capacity (a real replay).
    pub cache: f64,
    /// Belady MIN's hit rate at that capacity.
    pub optimal: f64,
}

/// Capacities to sample: 1, then ×~1.5 steps, up to one past the number of
/// distinct ranges (where both curves reach their ceiling).
pub fn capacities(distinct: usize) -> Vec<usize> {
    let mut v = vec![1usize];
    while *v.last().unwrap() <= distinct {
        let last = *v.last().unwrap();
        v.push((last * 3 / 2).max(last + 1));
    }
    v
}

/// Replay one rank of `trace` at each capacity.
///
/// # Errors
/// As [`replay::replay`].
pub fn curve<R: Registrar>(
    make: &dyn Fn() -> anyhow::Result<R>,
    trace: &Trace,
    rank: u32,
    config: &Config,
    footprint_limit: u64,
) -> anyhow::Result<(Vec<Point>, f64)> {
    let records = trace
        .ranks
        .get(&rank)
        .ok_or_else(|| anyhow::anyhow!("{}: no rank {rank}", trace.name))?;
    let one = Trace {
        name: trace.name.clone(),
        ranks: [(rank, records.clone())].into(),
    };
    let mut points = Vec::new();
    let mut ceiling = 0.0;
    for cap in capacities(optimal::distinct_keys(records)) {
        let cfg = Config {
            max_regions: cap,
            ..config.clone()
        };
        let r: RankReport = replay::replay(make, &one, &cfg, footprint_limit)?.remove(0);
        ceiling = r.unlimited_hit_rate;
        points.push(Point {
            capacity: cap,
            cache: r.hit_rate,
            optimal: r.optimal_hit_rate,
        });
    }
    Ok((points, ceiling))
}

/// Draw the curve to `path` (SVG).
///
/// # Errors
/// Drawing or writing the file failed.
pub fn draw(path: &Path, title: &str, points: &[Point], ceiling: f64) -> anyhow::Result<()> {
    let max_cap = points.iter().map(|p| p.capacity).max().unwrap_or(1).max(2) as f64;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((1f64..max_cap).log_scale(), 0f64..100f64)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("capacity (regions, log scale)")
        .y_desc("hit rate (%)")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let series = |f: fn(&Point) -> f64| {
        points
            .iter()
            .map(move |p| (p.capacity as f64, 100.0 * f(p)))
            .collect::<Vec<_>>()
    };
    chart
        .draw_series(LineSeries::new(series(|p| p.cache), BLUE.stroke_width(2)))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .label("regcache (LRU)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(series(|p| p.optimal), RED.stroke_width(2)))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .label("optimal (Belady MIN)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            vec![(1.0, 100.0 * ceiling), (max_cap, 100.0 * ceiling)],
            BLACK.mix(0.4),
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .label("unlimited capacity")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}
