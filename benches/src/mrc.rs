//! Miss-ratio curves: hit rate against capacity, for the cache in each
//! merge mode (real replays) and for the references (`optimal.rs`), drawn
//! as an SVG with `plotters`.
//!
//! The picture labels each reference for what it is, because the cache
//! with merging is routinely *above* Belady MIN over exact ranges: MIN is
//! the optimum for a cache that hits only on the very range it
//! registered, not for one that serves requests from merged regions. The
//! bound that does hold for merging caches (page coverage) is drawn too;
//! it does not depend on capacity, and no tighter one is computed.

use crate::optimal;
use crate::replay::{self, RankReport};
use crate::trace::Trace;
use plotters::prelude::*;
use regcache::{Config, Merge, Registrar};
use std::path::Path;

/// One point of the curve.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Point {
    /// Capacity in regions.
    pub capacity: usize,
    /// The cache's hit rate at that capacity in the configured merge mode
    /// (a real replay; one of the three below).
    pub cache: f64,
    /// With `--merge on`.
    pub merge_on: f64,
    /// With `--merge off`.
    pub merge_off: f64,
    /// With `--merge adaptive`.
    pub merge_adaptive: f64,
    /// Belady MIN's hit rate at that capacity over exact page ranges,
    /// without merging (not a bound for merging caches).
    pub optimal: f64,
    /// Bytes the cache registered in the configured merge mode.
    pub bytes_registered: u64,
    /// Modelled registrar time of that replay, ns (see
    /// [`RankReport::registrar_model_ns`]).
    pub registrar_model_ns: f64,
    /// Modelled registrar time of MIN's schedule, ns (MIN minimises
    /// misses, not cost).
    pub optimal_registrar_model_ns: f64,
}

/// The capacity-independent references of one rank (see `optimal.rs`).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct References {
    /// Exact-range repeats at unlimited capacity.
    pub unlimited_exact: f64,
    /// The containment floor at unlimited capacity.
    pub containment: f64,
    /// Upper bound for merging caches (page coverage), any capacity.
    pub merging_bound: f64,
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

/// Replay one rank of `trace` at each capacity, in each merge mode.
///
/// # Errors
/// As [`replay::replay`].
pub fn curve<R: Registrar>(
    make: &dyn Fn() -> anyhow::Result<R>,
    trace: &Trace,
    rank: u32,
    config: &Config,
    footprint_limit: u64,
) -> anyhow::Result<(Vec<Point>, References)> {
    let records = trace
        .ranks
        .get(&rank)
        .ok_or_else(|| anyhow::anyhow!("{}: no rank {rank}", trace.name))?;
    let one = Trace {
        name: trace.name.clone(),
        ranks: [(rank, records.clone())].into(),
    };
    let mut points = Vec::new();
    let mut refs = References {
        unlimited_exact: 0.0,
        containment: 0.0,
        merging_bound: 0.0,
    };
    for cap in capacities(optimal::distinct_keys(records)) {
        let at = |merge: Merge| -> anyhow::Result<RankReport> {
            let cfg = Config {
                max_regions: cap,
                merge,
                ..config.clone()
            };
            Ok(replay::replay(make, &one, &cfg, footprint_limit)?.remove(0))
        };
        let (on, off, adaptive) = (at(Merge::On)?, at(Merge::Off)?, at(Merge::Adaptive)?);
        refs = References {
            unlimited_exact: on.unlimited_hit_rate,
            containment: on.containment_hit_rate,
            merging_bound: on.merging_bound_hit_rate,
        };
        let mine = match config.merge {
            Merge::On => &on,
            Merge::Off => &off,
            Merge::Adaptive => &adaptive,
        };
        points.push(Point {
            capacity: cap,
            cache: mine.hit_rate,
            bytes_registered: mine.bytes_registered,
            registrar_model_ns: mine.registrar_model_ns,
            optimal_registrar_model_ns: mine.optimal_registrar_model_ns,
            merge_on: on.hit_rate,
            merge_off: off.hit_rate,
            merge_adaptive: adaptive.hit_rate,
            optimal: on.optimal_hit_rate,
        });
    }
    Ok((points, refs))
}

/// Which hit rate of a [`Point`] a line draws.
type Pick = fn(&Point) -> f64;

/// Draw the curve to `path` (SVG).
///
/// # Errors
/// Drawing or writing the file failed.
pub fn draw(path: &Path, title: &str, points: &[Point], refs: &References) -> anyhow::Result<()> {
    let max_cap = points.iter().map(|p| p.capacity).max().unwrap_or(1).max(2) as f64;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{title} (merging serves requests from larger regions: it can beat exact-range MIN)"
            ),
            ("sans-serif", 15),
        )
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
    let lines: [(&str, Pick, RGBColor); 4] = [
        ("regcache, merge adaptive", |p| p.merge_adaptive, BLUE),
        ("regcache, merge on (default)", |p| p.merge_on, CYAN),
        ("regcache, merge off", |p| p.merge_off, MAGENTA),
        (
            "Belady MIN, exact ranges, no merging (no bound for merging)",
            |p| p.optimal,
            RED,
        ),
    ];
    for (label, f, color) in lines {
        chart
            .draw_series(LineSeries::new(series(f), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    let flat: [(&str, f64, RGBAColor); 3] = [
        (
            "bound for merging caches: page coverage (any capacity)",
            refs.merging_bound,
            GREEN.mix(0.8),
        ),
        (
            "containment floor, unlimited capacity",
            refs.containment,
            BLACK.mix(0.6),
        ),
        (
            "exact-range repeats, unlimited capacity",
            refs.unlimited_exact,
            BLACK.mix(0.3),
        ),
    ];
    for (label, y, color) in flat {
        chart
            .draw_series(LineSeries::new(
                vec![(1.0, 100.0 * y), (max_cap, 100.0 * y)],
                color,
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
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
