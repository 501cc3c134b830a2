//! Bandwidth over time as PNG or SVG (by the file's extension), with plotters: one panel per
//! policy side by side, one line per site or group, a legend, and axes in UTC and Mbit/s.
//! Text is drawn with a TrueType font read from a file (Debian's fonts-dejavu-core by
//! default), so that no system font library is needed.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::clock::rfc3339;

/// The font the command line uses unless told otherwise.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FAMILY: &str = "sans-serif";
/// Tableau's ten colours: distinct, and readable on white.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One chart: a title and its lines.
pub struct Panel {
    pub title: String,
    pub lines: Vec<Line>,
}

/// A line: one value per bucket.
pub struct Line {
    pub name: String,
    pub mbps: Vec<f64>,
}

/// Why a plot could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlotError {
    #[error(
        "the plots need a TrueType font: {0} (apt-get install fonts-dejavu-core, or give --font FILE)"
    )]
    NoFont(String),
    #[error("not a TrueType or OpenType font")]
    NotAFont,
    #[error("drawing: {0}")]
    Drawing(String),
}

/// Reads the font at `path` for the plots' text (once per process).
pub fn register_font(path: &Path) -> Result<(), PlotError> {
    static REGISTERED: OnceLock<Result<(), PlotError>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes =
                std::fs::read(path).map_err(|error| PlotError::NoFont(error.to_string()))?;
            // Plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
                .map_err(|_| PlotError::NotAFont)
        })
        .clone()
}

/// Draws `panels` side by side into `path` (`.svg` or a bitmap format such as `.png`), the x
/// axis being the buckets starting at `starts` (seconds since the epoch).
pub fn bandwidth(
    path: &Path,
    title: &str,
    starts: &[i64],
    bucket: i64,
    panels: &[Panel],
) -> Result<(), PlotError> {
    let size = ((640 * panels.len() as u32 + 40).max(960), 560);
    if path.extension().is_some_and(|extension| extension == "svg") {
        draw(
            SVGBackend::new(path, size).into_drawing_area(),
            title,
            starts,
            bucket,
            panels,
        )
    } else {
        draw(
            BitMapBackend::new(path, size).into_drawing_area(),
            title,
            starts,
            bucket,
            panels,
        )
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    starts: &[i64],
    bucket: i64,
    panels: &[Panel],
) -> Result<(), PlotError> {
    let error = |error: DrawingAreaErrorKind<DB::ErrorType>| PlotError::Drawing(error.to_string());
    root.fill(&WHITE).map_err(error)?;
    let (first, last) = match (starts.first(), starts.last()) {
        (Some(&first), Some(&last)) => (first, last + bucket),
        _ => (0, bucket),
    };
    let heading = format!("{title}, {} to {} UTC", short_time(first), short_time(last));
    let root = root
        .titled(&heading, (FAMILY, 24).into_font().color(&BLACK))
        .map_err(error)?;
    // The same scale in every panel, so that policies compare at a glance.
    let highest = panels
        .iter()
        .flat_map(|panel| &panel.lines)
        .flat_map(|line| &line.mbps)
        .copied()
        .fold(0.0, f64::max);
    // Room above the highest point for the legend, a line of it per series.
    let entries = panels
        .iter()
        .map(|panel| panel.lines.len())
        .max()
        .unwrap_or(0);
    let headroom = 1.1 + 0.045 * entries as f64;
    let top = if highest > 0.0 {
        highest * headroom
    } else {
        1.0
    };
    // x is in hours from the first day's midnight, so that ticks fall on whole hours.
    let midnight = first.div_euclid(86_400) * 86_400;
    let hours = |seconds: i64| (seconds - midnight) as f64 / 3600.0;
    let span = (last - first) as f64;
    let areas = root.split_evenly((1, panels.len().max(1)));
    // Thick lines draw spikes badly when buckets are denser than pixels.
    let stroke = if starts.len() > 300 { 1 } else { 2 };
    for (area, panel) in areas.iter().zip(panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, (FAMILY, 20))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(hours(first)..hours(last), 0.0..top)
            .map_err(error)?;
        let clock = |x: &f64| clock_label(midnight + (x * 3600.0).round() as i64, span);
        let rate = |y: &f64| rate_label(*y, top);
        chart
            .configure_mesh()
            .x_desc("time (UTC)")
            .y_desc("bandwidth (Mbit/s)")
            .x_labels(if span > 86_400.0 { 5 } else { 7 })
            .y_labels(8)
            .x_label_formatter(&clock)
            .y_label_formatter(&rate)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(error)?;
        for (index, line) in panel.lines.iter().enumerate() {
            let colour = COLOURS[index % COLOURS.len()];
            let points = starts
                .iter()
                .zip(&line.mbps)
                .map(|(&start, &mbps)| (hours(start), mbps));
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(stroke)))
                .map_err(error)?
                .label(&line.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], colour.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(error)?;
    }
    root.present().map_err(error)
}

/// `2026-11-21 00:00`.
fn short_time(seconds: i64) -> String {
    let text = rfc3339(seconds);
    format!("{} {}", &text[..10], &text[11..16])
}

/// `HH:MM`, with the date when the plot spans more than a day.
fn clock_label(seconds: i64, span: f64) -> String {
    let text = rfc3339(seconds);
    if span > 86_400.0 {
        format!("{} {}", &text[5..10], &text[11..16])
    } else {
        text[11..16].to_owned()
    }
}

/// As many decimals as the scale needs.
fn rate_label(mbps: f64, top: f64) -> String {
    match top {
        top if top >= 10.0 => format!("{mbps:.0}"),
        top if top >= 1.0 => format!("{mbps:.1}"),
        top if top >= 0.1 => format!("{mbps:.2}"),
        _ => format!("{mbps:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_as_times_and_rates() {
        assert_eq!(clock_label(1_709_251_199, 3600.0), "23:59");
        assert_eq!(clock_label(1_709_251_199, 2.0 * 86_400.0), "02-29 23:59");
        assert_eq!(rate_label(12.345, 50.0), "12");
        assert_eq!(rate_label(0.1234, 0.5), "0.12");
    }
}
