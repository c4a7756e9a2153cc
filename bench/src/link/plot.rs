//! `link.png`: bytes per frame (log scale) against ImageNet top-1 agreement,
//! one labelled point per row, one colour per family of rows.
//!
//! Drawn by plotters into an RGB buffer and written as PNG by `image`. Text
//! is rendered by plotters' `ab_glyph` backend from DejaVu Sans, read at run
//! time, so no fontconfig or freetype is involved.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, ensure};
use plotters::prelude::*;

use super::RowKind;

/// The font the text is drawn with (Debian package fonts-dejavu-core).
const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Family name plotters asks for by default; the font is registered as it.
const FONT_FAMILY: &str = "sans-serif";

/// Image size in pixels.
const SIZE: (u32, u32) = (1280, 800);

/// The families of rows: colour and legend text (Okabe–Ito colours, which
/// stay apart for colour-blind readers).
const SERIES: [(RowKind, RGBColor, &str); 4] = [
    (
        RowKind::Latentcam,
        RGBColor(0, 114, 178),
        "latentcam: edge encodes, latent on the wire",
    ),
    (
        RowKind::Jpeg444,
        RGBColor(213, 94, 0),
        "JPEG 4:4:4 (image), host encodes",
    ),
    (
        RowKind::Jpeg420,
        RGBColor(0, 158, 115),
        "JPEG 4:2:0 (jpeg-encoder), host encodes",
    ),
    (
        RowKind::RawRgb,
        RGBColor(90, 90, 90),
        "raw RGB 224×224 crop, host encodes",
    ),
];

/// One point of the plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Text beside the point.
    pub label: String,
    /// Which family (colour, legend entry) it belongs to.
    pub series: RowKind,
    /// Mean bytes per frame (x).
    pub bytes: f64,
    /// Top-1 agreement in percent (y).
    pub top1_pct: f64,
}

/// Registers DejaVu Sans with plotters once per process.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT_PATH).map_err(|e| {
                format!(
                    "cannot read the plot font {FONT_PATH} ({e}): install the Debian package \
                     fonts-dejavu-core (apt-get install fonts-dejavu-core)"
                )
            })?;
            // plotters keeps fonts for the whole process; one font, once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT_PATH} is not a font plotters can read"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

fn drawing_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the link plot failed: {e}")
}

/// Axis tick text for a byte count: "800 B", "1.5 kB", "20 kB" (1 kB = 1000 B).
fn human_bytes(bytes: f64) -> String {
    if bytes < 1e3 {
        format!("{bytes:.0} B")
    } else if bytes < 1e4 && (bytes / 1e3).fract().abs() > 1e-9 {
        format!("{:.1} kB", bytes / 1e3)
    } else {
        format!("{:.0} kB", bytes / 1e3)
    }
}

/// The x range (bytes, a margin either side on the log scale) and y range
/// (percent: from a multiple of 10 at least 5 below the lowest point, to a
/// little above 100 so the points at 100 % stay clear of the frame).
fn axis_ranges(points: &[Point]) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let min_bytes = points.iter().map(|p| p.bytes).fold(f64::INFINITY, f64::min);
    let max_bytes = points.iter().map(|p| p.bytes).fold(0.0, f64::max);
    let min_pct = points
        .iter()
        .map(|p| p.top1_pct)
        .fold(f64::INFINITY, f64::min);
    let low = (((min_pct - 5.0) / 10.0).floor() * 10.0).clamp(0.0, 90.0);
    (min_bytes / 1.6..max_bytes * 1.6, low..103.0)
}

/// Draws the points and writes the PNG to `path`.
pub fn write_png(path: &Path, points: &[Point], title: &str) -> Result<()> {
    ensure!(!points.is_empty(), "the link plot has no points");
    ensure!(
        points
            .iter()
            .all(|p| p.bytes > 0.0 && p.bytes.is_finite() && p.top1_pct.is_finite()),
        "the link plot needs positive byte counts and finite agreements"
    );
    register_font()?;
    let (width, height) = SIZE;
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        let (x_range, y_range) = axis_ranges(points);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT_FAMILY, 22))
            .margin(24)
            .x_label_area_size(60)
            .y_label_area_size(80)
            .build_cartesian_2d(x_range.log_scale(), y_range)
            .map_err(drawing_error)?;
        chart
            .configure_mesh()
            .x_desc("bytes per frame (log scale)")
            .y_desc("ImageNet top-1 agreement with the fp32 latent (%)")
            .x_label_formatter(&|v| human_bytes(*v))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT_FAMILY, 16))
            .axis_desc_style((FONT_FAMILY, 18))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(drawing_error)?;

        for (kind, colour, legend) in SERIES {
            let mut series: Vec<&Point> = points.iter().filter(|p| p.series == kind).collect();
            if series.is_empty() {
                continue;
            }
            series.sort_by(|a, b| a.bytes.total_cmp(&b.bytes));
            if matches!(kind, RowKind::Jpeg444 | RowKind::Jpeg420) {
                // The qualities form a curve: join them.
                chart
                    .draw_series(LineSeries::new(
                        series.iter().map(|p| (p.bytes, p.top1_pct)),
                        colour.mix(0.5).stroke_width(2),
                    ))
                    .map_err(drawing_error)?;
            }
            chart
                .draw_series(series.iter().map(|p| {
                    EmptyElement::at((p.bytes, p.top1_pct))
                        + Circle::new((0, 0), 6, colour.filled())
                        + Text::new(p.label.clone(), (8, -22), (FONT_FAMILY, 16).into_font())
                }))
                .map_err(drawing_error)?
                .label(legend)
                .legend(move |(x, y)| Circle::new((x, y), 6, colour.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT_FAMILY, 16))
            .draw()
            .map_err(drawing_error)?;
        root.present().map_err(drawing_error)?;
    }
    image::RgbImage::from_raw(width, height, pixels)
        .context("the plot buffer does not match its size")?
        .save_with_format(path, image::ImageFormat::Png)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(bytes: f64, top1_pct: f64) -> Point {
        Point {
            label: String::new(),
            series: RowKind::Jpeg444,
            bytes,
            top1_pct,
        }
    }

    #[test]
    fn byte_ticks_read_naturally() {
        assert_eq!(human_bytes(800.0), "800 B");
        assert_eq!(human_bytes(1000.0), "1 kB");
        assert_eq!(human_bytes(1500.0), "1.5 kB");
        assert_eq!(human_bytes(20_000.0), "20 kB");
        assert_eq!(human_bytes(150_528.0), "151 kB");
    }

    #[test]
    fn axes_leave_room_around_the_points() {
        let (x, y) = axis_ranges(&[point(1000.0, 100.0), point(16_000.0, 63.0)]);
        assert_eq!(x, 625.0..25_600.0);
        // 63 − 5 = 58, down to the multiple of ten: 50.
        assert_eq!(y, 50.0..103.0);
        let (_, y) = axis_ranges(&[point(1000.0, 2.0)]);
        assert_eq!(y.start, 0.0);
        let (_, y) = axis_ranges(&[point(1000.0, 100.0)]);
        assert_eq!(y.start, 90.0);
    }
}
