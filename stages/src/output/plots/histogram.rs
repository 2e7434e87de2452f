//! `warp_variance_hist.png`: the histogram of the valid tiles' warp variance (`Var(dx) + Var(dy)` of
//! their local shifts over the used frames, px²), with a title, axis units and the median marked.
//!
//! What it does not: compute the variances (the tile reports carry them).

use plotters::prelude::*;

use super::{axis_label, label, padded_range, short_number, text, Picture, INK, TEXT_PX, TITLE_PX};

const WIDTH_PX: u32 = 900;
const HEIGHT_PX: u32 = 520;
const MAX_BINS: usize = 30;
const BARS: RGBColor = RGBColor(60, 100, 180);
/// A log axis when the largest positive value is more than this times the smallest.
const LOG_ABOVE_RATIO: f64 = 100.0;

/// Draws the histogram of the finite `values` (one per valid tile); `tiles` is the grid's tile count.
pub(crate) fn warp_variance_histogram(values: &[f32], tiles: usize) -> Result<Picture, String> {
    let mut finite: Vec<f64> = values
        .iter()
        .map(|&v| f64::from(v))
        .filter(|v| v.is_finite())
        .collect();
    finite.sort_by(f64::total_cmp);
    let n = finite.len();
    let median = (n > 0).then(|| finite[n / 2]);
    // Spread over more than two decades (a few tiles where seeing moved a lot): a log axis, on which
    // the tiles at 0 cannot be shown (they are counted in the subtitle).
    let positive: Vec<f64> = finite.iter().copied().filter(|&v| v > 0.0).collect();
    let log = match (positive.first(), positive.last()) {
        (Some(&lo), Some(&hi)) => positive.len() >= 2 && hi / lo > LOG_ABOVE_RATIO,
        _ => false,
    };
    let at_zero = if log { n - positive.len() } else { 0 };
    if log {
        finite = positive.iter().map(|v| v.log10()).collect();
    }
    let key = move |v: f64| if log { v.log10() } else { v };
    let (lo, hi) = match (finite.first(), finite.last()) {
        (Some(&lo), Some(&hi)) if hi > lo => (lo, hi),
        (Some(&v), _) => padded_range(std::iter::once(v), (0.0, 1.0)),
        _ => (0.0, 1.0),
    };
    let bins = ((n as f64).sqrt().ceil() as usize).clamp(1, MAX_BINS);
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for &v in &finite {
        let b = ((v - lo) / width).floor();
        counts[(b.max(0.0) as usize).min(bins - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    let x_range = padded_range([lo, hi].into_iter(), (0.0, 1.0));
    let linear_label = axis_label(x_range.0, x_range.1);
    Picture::draw(WIDTH_PX, HEIGHT_PX, |root| {
        root.fill(&WHITE)?;
        let title = if n == 0 {
            format!("Warp variance: no valid tile (of {tiles})")
        } else {
            format!("Warp variance of the {n} valid tiles (of {tiles})")
        };
        label(root, &title, (14, 10), &text(TITLE_PX, INK))?;
        let mut subtitle =
            "Var(dx) + Var(dy) of a tile's local shifts over the frames: high where \
                            seeing moves the tile; such tiles weigh less in the blend"
                .to_string();
        if at_zero > 0 {
            subtitle.push_str(&format!(" ({at_zero} at 0 px², off the log axis)"));
        }
        label(root, &subtitle, (14, 38), &text(TEXT_PX - 2, INK))?;
        let area = root.margin(62, 10, 10, 24);
        let mut chart = ChartBuilder::on(&area)
            .x_label_area_size(50)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range.0..x_range.1, 0f64..top as f64 * 1.1)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(225, 225, 225))
            .x_desc(if log {
                "warp variance (px², log scale)"
            } else {
                "warp variance (px²)"
            })
            .y_desc("tiles")
            .y_labels((top + 1).min(10))
            .x_labels(if log {
                ((x_range.1 - x_range.0).ceil() as usize + 1).clamp(2, 10)
            } else {
                10
            })
            .x_label_formatter(&|v| {
                if log {
                    trimmed(short_number(10f64.powf(*v)))
                } else {
                    linear_label(v)
                }
            })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(text(TEXT_PX - 2, INK))
            .axis_desc_style(text(TEXT_PX, INK))
            .draw()?;
        chart.draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(b, &c)| {
                    let x0 = lo + b as f64 * width;
                    let mut bar =
                        Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], BARS.filled());
                    bar.set_margin(0, 0, 1, 1);
                    bar
                }),
        )?;
        if let Some(m) = median.map(key).filter(|m| m.is_finite()) {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(m, 0.0), (m, top as f64 * 1.1)],
                INK.stroke_width(2),
            )))?;
            let (x, _) = chart.backend_coord(&(m, 0.0));
            let (_, y) = chart.backend_coord(&(m, top as f64 * 1.1));
            label(
                root,
                &format!("median {} px²", short_number(median.unwrap_or(m))),
                (x + 6, y + 4),
                &text(TEXT_PX, INK),
            )?;
        }
        Ok(())
    })
}

/// A number without trailing zeros after its decimal point (`"0.0100"` -> `"0.01"`, `"10.0"` -> `"10"`).
fn trimmed(number: String) -> String {
    if number.contains('.') && !number.contains('e') {
        number
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_drawn_and_edge_cases_hold() {
        let values: Vec<f32> = (0..500)
            .map(|i| ((i * 37) % 100) as f32 * 0.01)
            .chain([f32::NAN, f32::INFINITY])
            .collect();
        assert_eq!(trimmed("0.0100".into()), "0.01");
        assert_eq!(trimmed("10.0".into()), "10");
        assert_eq!(trimmed("1.50e7".into()), "1.50e7");
        let p = warp_variance_histogram(&values, 510).unwrap();
        assert_eq!((p.width, p.height), (WIDTH_PX, HEIGHT_PX));
        let bar_px = p.rgb.chunks(3).filter(|px| px == &[60, 100, 180]).count();
        assert!(bar_px > 20_000, "bars {bar_px}");
        // No value, one value, equal values, NaN only, huge and tiny values.
        for values in [
            vec![],
            vec![0.5],
            vec![0.0; 7],
            vec![f32::NAN; 3],
            vec![1e-30, 3e38],
        ] {
            let p = warp_variance_histogram(&values, 1).unwrap();
            assert_eq!(p.rgb.len(), (WIDTH_PX * HEIGHT_PX * 3) as usize);
        }
    }
}
