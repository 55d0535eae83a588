//! The intra-node bandwidth plot of `cargo xtask bench`: keyed DMA against
//! single-thread `memcpy` and Open MPI's vader, bandwidth against message
//! size (1 B to 64 MiB, both axes logarithmic), drawn as an SVG with
//! `plotters` from the CSV that `regcache-transport`'s `intranode` bench
//! writes (`RC_BENCH_ONLY=report RC_BENCH_CSV=<file>`; issue 14).
//!
//! The CSV is `series,bytes,gb_per_s` with a header line; one curve per
//! series name, in order of first appearance. The measurements are the
//! bench's (best of its interleaved runs); this module only reads and
//! draws them.

use plotters::prelude::*;
use std::path::Path;

/// One curve: a series name and its `(bytes, GB/s)` points, by size.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The name in the legend (`keyed DMA`, `memcpy`, `Open MPI vader`, ...).
    pub name: String,
    /// `(message bytes, GB/s)`, sorted by size.
    pub points: Vec<(u64, f64)>,
}

/// Parse the bench's CSV.
///
/// # Errors
/// A line that is not `name,bytes,gb_per_s` with an integer size ≥ 1 and
/// a finite bandwidth ≥ 0 (the line number and the line in the message).
pub fn parse(text: &str) -> anyhow::Result<Vec<Series>> {
    let mut out: Vec<Series> = Vec::new();
    for (k, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || anyhow::anyhow!("line {}: expected series,bytes,gb_per_s: {line:?}", k + 1);
        let mut f = line.rsplitn(3, ',');
        let bw: f64 = f
            .next()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(bad)?;
        let bytes: u64 = f
            .next()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(bad)?;
        let name = f
            .next()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(bad)?;
        if bytes == 0 || !bw.is_finite() || bw < 0.0 {
            return Err(bad());
        }
        match out.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push((bytes, bw)),
            None => out.push(Series {
                name: name.to_owned(),
                points: vec![(bytes, bw)],
            }),
        }
    }
    for s in &mut out {
        s.points.sort_by_key(|p| p.0);
    }
    Ok(out)
}

/// Draw `series` to `path` (SVG): log-log, one colour per series; zero
/// bandwidths (a path the bench did not run at that size) are left out.
///
/// # Errors
/// No positive point to draw; drawing or writing the file failed.
pub fn draw(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let pts = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.1 > 0.0)
    };
    let max_x = pts()
        .map(|p| p.0)
        .max()
        .ok_or_else(|| anyhow::anyhow!("nothing to draw"))?;
    let min_y = pts().map(|p| p.1).fold(f64::MAX, f64::min);
    let max_y = pts().map(|p| p.1).fold(0.0, f64::max);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(
            (1f64..(max_x as f64).max(2.0)).log_scale(),
            ((min_y / 2.0).max(1e-6)..max_y * 2.0).log_scale(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("message size (bytes, log scale)")
        .y_desc("bandwidth (GB/s, log scale)")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (k, s) in series.iter().enumerate() {
        let colour = Palette99::pick(k).to_rgba();
        // The headline curves bold, the forced paths of the calibration thin.
        let width = if s.name.starts_with("keyed DMA ") {
            1
        } else {
            3
        };
        let line: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| p.1 > 0.0)
            .map(|&(b, v)| (b as f64, v))
            .collect();
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(width)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(width))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_series_in_order_and_refuses_bad_lines() {
        let s = parse(
            "series,bytes,gb_per_s\nkeyed DMA,4,0.5\nmemcpy,1,1\nkeyed DMA,1,0.25\n\nOpen MPI vader,64,2e-3\n",
        )
        .unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["keyed DMA", "memcpy", "Open MPI vader"]);
        assert_eq!(s[0].points, [(1, 0.25), (4, 0.5)]);
        assert_eq!(s[2].points, [(64, 0.002)]);
        for bad in [
            "h\nx,1",
            "h\nx,0,1",
            "h\n,4,1",
            "h\nx,4,-1",
            "h\nx,4,NaN",
            "h\nx,4k,1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn draws_an_svg_with_every_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intranode.svg");
        let s = parse("h\nkeyed DMA,1,0.01\nkeyed DMA,1048576,10\nmemcpy,1,0.1\nmemcpy,1048576,20\nkeyed DMA eager,1,0\n").unwrap();
        draw(&path, "t", &s).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for name in ["keyed DMA", "memcpy", "keyed DMA eager"] {
            assert!(
                svg.contains(&format!(">\n{name}\n</text>")),
                "no legend entry {name}"
            );
        }
        assert!(draw(&path, "t", &parse("h\nx,1,0\n").unwrap()).is_err());
    }
}
