//! SVG plots of the results (plotters, SVG backend, no font files: text is left to the SVG viewer).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::Role;

/// One bar: its label, its value, what it is.
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub role: Role,
}

const SUBJECT: RGBColor = RGBColor(0xd9, 0x5f, 0x02);
const SUBJECT_LOG: RGBColor = RGBColor(0x7f, 0x2a, 0x04);
const PEER: RGBColor = RGBColor(0x4c, 0x78, 0xa8);
const FLOOR: RGBColor = RGBColor(0x99, 0x99, 0x99);

fn color(role: Role) -> RGBColor {
    match role {
        Role::Subject => SUBJECT,
        Role::Peer => PEER,
        Role::Floor => FLOOR,
    }
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}

/// Horizontal bars on a logarithmic axis (values span several orders of magnitude): collection-store orange, peers
/// blue, floors grey.
pub fn bars(path: &Path, title: &str, axis: &str, bars: &[Bar]) -> Result<()> {
    let bars: Vec<&Bar> = bars
        .iter()
        .filter(|b| b.value.is_finite() && b.value > 0.0)
        .collect();
    if bars.is_empty() {
        return Ok(());
    }
    let height = 90 + 26 * bars.len() as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    draw_bars(&root, title, axis, &bars)?;
    root.present().map_err(err)?;
    Ok(())
}

fn draw_bars(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    axis: &str,
    bars: &[&Bar],
) -> Result<()> {
    let lo = bars.iter().map(|b| b.value).fold(f64::INFINITY, f64::min) / 2.0;
    let hi = bars.iter().map(|b| b.value).fold(0.0, f64::max) * 2.0;
    let n = bars.len();
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(430)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(axis)
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if *i < n => labels[n - 1 - *i].clone(),
            _ => String::new(),
        })
        .x_label_formatter(&|v| crate::report::fmt_rate(*v))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            // The first bar at the top.
            let at = n - 1 - i;
            let mut r = Rectangle::new(
                [
                    (lo, SegmentValue::Exact(at)),
                    (b.value, SegmentValue::Exact(at + 1)),
                ],
                color(b.role).filled(),
            );
            r.set_margin(3, 3, 0, 0);
            r
        }))
        .map_err(err)?;
    Ok(())
}

/// One line: its engine, what it is, and its (threads, value) points.
pub type Series = (String, Role, Vec<(usize, f64)>);

/// Lines of a value against thread count, one per engine.
pub fn lines(path: &Path, title: &str, axis: &str, series: &[Series]) -> Result<()> {
    let max_x = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .max()
        .unwrap_or(1);
    let values = || {
        series
            .iter()
            .flat_map(|s| s.2.iter().map(|p| p.1))
            .filter(|v| *v > 0.0)
    };
    let (lo, hi) = (
        values().fold(f64::INFINITY, f64::min),
        values().fold(0.0, f64::max),
    );
    if !lo.is_finite() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(1u32..(max_x as u32), (lo / 2.0..hi * 2.0).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("threads")
        .y_desc(axis)
        .y_label_formatter(&|v| crate::report::fmt_rate(*v))
        .draw()
        .map_err(err)?;
    let mut subjects = 0;
    for (i, (name, role, points)) in series.iter().enumerate() {
        let c = match role {
            // collection-store orange, its log on its own dark brown.
            Role::Subject => {
                subjects += 1;
                if subjects == 1 {
                    SUBJECT.to_rgba()
                } else {
                    SUBJECT_LOG.to_rgba()
                }
            }
            _ => Palette99::pick(i).to_rgba(),
        };
        let width = if *role == Role::Subject { 3 } else { 1 };
        let pts: Vec<(u32, f64)> = points.iter().map(|(x, y)| (*x as u32, *y)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(width)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(width))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.svg");
        let b = [
            Bar {
                label: "floor".into(),
                value: 10_000.0,
                role: Role::Floor,
            },
            Bar {
                label: "collection-store".into(),
                value: 9_000.0,
                role: Role::Subject,
            },
            Bar {
                label: "peer".into(),
                value: 400.0,
                role: Role::Peer,
            },
        ];
        bars(&p, "t", "commits/s", &b).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("collection-store"),
            "{svg}"
        );
        let l = dir.path().join("l.svg");
        let series: Vec<Series> = vec![
            (
                "collection-store".to_owned(),
                Role::Subject,
                vec![(1, 8e3), (2, 14e3), (4, 20e3)],
            ),
            (
                "peer".to_owned(),
                Role::Peer,
                vec![(1, 4e3), (2, 4e3), (4, 4e3)],
            ),
        ];
        lines(&l, "t", "commits/s", &series).unwrap();
        assert!(std::fs::read_to_string(&l).unwrap().contains("peer"));
    }
}
