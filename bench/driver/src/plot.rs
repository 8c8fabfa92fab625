//! The SVG plots, through plotters' SVG backend (text as SVG `<text>`, no
//! font files, no system library).

use std::path::Path;

use plotters::prelude::*;

/// One line of a plot: a label and its points.
pub struct Series {
    /// The legend's text.
    pub label: String,
    /// (x, y) points; y > 0 (log scale).
    pub points: Vec<(f64, f64)>,
    /// Dashed-looking (points only) or solid.
    pub baseline: bool,
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// A log-log line plot of `series` into `path`.
pub fn log_log(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<(), String> {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (1.0f64, 1.0f64);
    for (x, y) in all {
        x_max = x_max.max(*x);
        y_max = y_max.max(*y);
    }
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<std::io::Error>| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0.8f64..x_max * 1.5).log_scale(), (0.8f64..y_max * 2.0).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let width = if s.baseline { 1 } else { 2 };
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), colour.stroke_width(width)))
            .map_err(err)?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|p| Circle::new(*p, 3, colour.filled()))).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
