//! `frame_quality.png`: per frame, over the frame number (1 = the first in time order, as in
//! `tile_report.json`'s `frames`), the star FWHM, the global weight and the share of the valid tiles
//! that used the frame, as Siril's registration plot shows them; used frames green, frames left out red.
//!
//! What it does not: judge frames (the global pass and the tiles did).

use plotters::prelude::*;

use super::{axis_label, label, padded_range, text, Drawn, Picture, INK, INVALID, TEXT_PX};
use super::{TITLE_PX, VALID};
use crate::report::FrameSummary;

const WIDTH_PX: u32 = 1000;
const PANEL_PX: u32 = 230;
const HEAD_PX: u32 = 70;
const LINE: RGBColor = RGBColor(190, 190, 190);

/// One panel: its axis name and a value per frame.
struct Series<'a> {
    name: &'a str,
    values: Vec<Option<f64>>,
    /// Fixed range, or `None` to fit the values.
    range: Option<(f64, f64)>,
}

/// Draws the quality of `frames`; `tile_use[i]` is the percentage of the valid tiles that used frame
/// `i` (`None` when the frame never reached the tiles).
pub(crate) fn frame_quality(
    frames: &[FrameSummary],
    tile_use: &[Option<f64>],
) -> Result<Picture, String> {
    let n = frames.len();
    let used = frames.iter().filter(|f| f.used).count();
    let series = [
        Series {
            name: "star FWHM (px)",
            values: frames.iter().map(|f| f.fwhm_px.map(f64::from)).collect(),
            range: None,
        },
        Series {
            name: "global weight",
            values: frames.iter().map(|f| Some(f64::from(f.weight))).collect(),
            range: None,
        },
        Series {
            name: "tiles using it (%)",
            values: (0..n).map(|i| tile_use.get(i).copied().flatten()).collect(),
            range: Some((0.0, 105.0)),
        },
    ];
    let height = HEAD_PX + series.len() as u32 * PANEL_PX + 20;
    Picture::draw(WIDTH_PX, height, |root| {
        root.fill(&WHITE)?;
        label(
            root,
            &format!("Frame quality: {used} of {n} frames used"),
            (14, 10),
            &text(TITLE_PX, INK),
        )?;
        let (x, y) = (16, 48);
        root.draw(&Circle::new((x, y), 5, VALID.filled()))?;
        label(root, "used", (x + 12, y - 9), &text(TEXT_PX, INK))?;
        root.draw(&Cross::new((x + 80, y), 5, INVALID.stroke_width(2)))?;
        label(
            root,
            "left out by the global selection",
            (x + 92, y - 9),
            &text(TEXT_PX, INK),
        )?;
        let body = root.margin(HEAD_PX, 20, 10, 24);
        let panels = body.split_evenly((series.len(), 1));
        for (k, (panel, s)) in panels.iter().zip(&series).enumerate() {
            let last = k + 1 == series.len();
            draw_panel(panel, s, frames, last)?;
        }
        Ok(())
    })
}

/// One panel of [`frame_quality`]; the last one gets the frame axis description.
fn draw_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    series: &Series,
    frames: &[FrameSummary],
    last: bool,
) -> Drawn {
    let n = frames.len();
    let (lo, hi) = series
        .range
        .unwrap_or_else(|| padded_range(series.values.iter().flatten().copied(), (0.0, 1.0)));
    let mut chart = ChartBuilder::on(area)
        .x_label_area_size(if last { 46 } else { 26 })
        .y_label_area_size(84)
        .build_cartesian_2d(0.5f64..n.max(1) as f64 + 0.5, lo..hi)?;
    let y_label = axis_label(lo, hi);
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .x_labels(n.clamp(1, 15))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(6)
        .y_label_formatter(&y_label)
        .y_desc(series.name)
        .label_style(text(TEXT_PX - 2, INK))
        .axis_desc_style(text(TEXT_PX, INK));
    if last {
        mesh.x_desc("frame number");
    }
    mesh.draw()?;
    let points: Vec<(f64, f64, bool)> = series
        .values
        .iter()
        .zip(frames)
        .enumerate()
        .filter_map(|(i, (v, f))| {
            v.filter(|v| v.is_finite())
                .map(|v| ((i + 1) as f64, v, f.used))
        })
        .collect();
    if points.is_empty() {
        let (x, y) = chart.backend_coord(&(0.5 + n.max(1) as f64 / 2.0, (lo + hi) / 2.0));
        label(area, "not measured", (x - 50, y - 8), &text(TEXT_PX, INK))?;
        return Ok(());
    }
    chart.draw_series(std::iter::once(PathElement::new(
        points.iter().map(|&(x, y, _)| (x, y)).collect::<Vec<_>>(),
        LINE.stroke_width(1),
    )))?;
    let r = if n > 200 { 2 } else { 4 };
    chart.draw_series(
        points
            .iter()
            .filter(|p| p.2)
            .map(|&(x, y, _)| Circle::new((x, y), r, VALID.filled())),
    )?;
    chart.draw_series(
        points
            .iter()
            .filter(|p| !p.2)
            .map(|&(x, y, _)| Cross::new((x, y), r + 1, INVALID.stroke_width(2))),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn frame(i: usize, used: bool, fwhm: Option<f32>) -> FrameSummary {
        FrameSummary {
            label: PathBuf::from(format!("f{i}.fits")),
            used,
            weight: if used { 0.5 + 0.01 * i as f32 } else { 0.0 },
            background: None,
            noise: None,
            fwhm_px: fwhm,
            stars: None,
            shift: None,
        }
    }

    #[test]
    fn used_and_rejected_frames_are_marked() {
        let frames: Vec<FrameSummary> = (0..40)
            .map(|i| frame(i, i % 9 != 4, Some(1.8 + 0.02 * i as f32)))
            .collect();
        let use_: Vec<Option<f64>> = frames.iter().map(|f| f.used.then_some(90.0)).collect();
        let p = frame_quality(&frames, &use_).unwrap();
        assert_eq!(p.width, WIDTH_PX);
        let count = |c: RGBColor| p.rgb.chunks(3).filter(|px| px == &[c.0, c.1, c.2]).count();
        assert!(count(VALID) > 1000, "green {}", count(VALID));
        assert!(count(INVALID) > 50, "red {}", count(INVALID));
    }

    #[test]
    fn edge_cases_draw_without_panics() {
        for frames in [
            vec![],
            vec![frame(0, true, Some(2.0))],
            vec![frame(0, false, None), frame(1, false, Some(f32::NAN))],
            (0..3000).map(|i| frame(i, true, Some(2.0))).collect(),
        ] {
            let p = frame_quality(&frames, &[]).unwrap();
            assert_eq!(p.rgb.len(), (p.width * p.height * 3) as usize);
        }
    }
}
