//! `warp_field.png`: the local warp of one frame, one arrow per valid tile from the tile's centre (the
//! tile's shift minus the frame's global shift, enlarged), over the dimmed image; invalid tiles in red,
//! valid tiles in which the frame was rejected as grey crosses; the frame's number and file in the title
//! and the arrow scale in the legend.
//!
//! What it does not: choose the frame or compute the shifts (`diagnostics.rs` does).

use ndarray::ArrayView2;
use plotters::prelude::*;

use super::panel::{arrow_segments, cells, draw_cells, over_image, Overlay, Symbol};
use super::{nice_floor, short_number, Picture, ARROW, INVALID, NO_DATA};
use tlr_core::{Shift, TileBox};

/// Picture pixels of the 90th-percentile arrow, as a fraction of the median tile cell's shorter edge.
const LONGEST_ARROW_OF_CELL: f64 = 0.45;
/// Arrows are cut at this many tile cells.
const CUT_AT_CELLS: f64 = 1.5;
/// The legend's arrow is about this long, px.
const LEGEND_ARROW_PX: f64 = 80.0;

/// The frame `warp_field.png` shows.
pub(crate) struct WarpFrame<'a> {
    /// 1-based frame number in the run's frames, and their count; `None` when the run used no frame.
    pub number: Option<(usize, usize)>,
    /// The frame's file name.
    pub name: String,
    /// Every tile of the grid.
    pub tiles: &'a [TileBox],
    /// Per tile: `None` for an invalid tile, else its local shift in this frame (NaN where the frame
    /// was rejected in the tile).
    pub shifts: &'a [Option<Shift>],
}

/// Draws the warp field of `frame` over `image`.
pub(crate) fn warp_field(image: ArrayView2<f32>, frame: &WarpFrame) -> Result<Picture, String> {
    if frame.shifts.len() != frame.tiles.len() {
        return Err(format!(
            "{} shifts for {} tiles",
            frame.shifts.len(),
            frame.tiles.len()
        ));
    }
    let (rows, cols) = image.dim();
    let cells = cells(frame.tiles, rows, cols);
    let finite: Vec<(usize, Shift)> = frame
        .shifts
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.filter(|s| s.dx.is_finite() && s.dy.is_finite())
                .map(|s| (i, s))
        })
        .collect();
    let mut lengths: Vec<f64> = finite.iter().map(|(_, s)| f64::from(s.norm())).collect();
    lengths.sort_by(f64::total_cmp);
    let longest = lengths.last().copied().unwrap_or(0.0);
    let rms = (lengths.iter().map(|l| l * l).sum::<f64>() / lengths.len().max(1) as f64).sqrt();
    // The scale follows the bulk of the arrows (90th percentile), not one outlier tile; longer arrows
    // are cut at one tile cell.
    let typical = lengths
        .get((lengths.len() * 9).saturating_sub(1) / 10)
        .copied()
        .filter(|&l| l > 0.0)
        .unwrap_or(longest);
    let mut edges: Vec<f64> = cells.iter().map(|c| (c.2 - c.0).min(c.3 - c.1)).collect();
    edges.sort_by(f64::total_cmp);
    let cell_edge = edges.get(edges.len() / 2).copied().unwrap_or(1.0);
    let invalid = frame.shifts.iter().filter(|s| s.is_none()).count();
    let rejected = frame.shifts.len() - invalid - finite.len();
    let title = vec![
        match frame.number {
            Some((n, of)) => format!("Local warp field of frame {n} of {of}: {}", frame.name),
            None => "Local warp field: no frame was used".to_string(),
        },
        "the frame with the strongest local motion (median over the tiles); each arrow: a tile's"
            .to_string(),
        format!(
            "shift minus the frame's global shift (RMS {} px, longest {} px)",
            short_number(rms),
            short_number(longest)
        ),
    ];
    // The scale, in picture pixels per pixel of shift, fixed once the image's scale is known; the
    // legend needs it before drawing, so compute the image scale the same way the panel does.
    let (_, panel_cols) = super::panel::panel_size(rows, cols);
    let picture_per_image = panel_cols as f64 / cols as f64;
    let px_per_shift = if typical > 0.0 && typical.is_finite() {
        LONGEST_ARROW_OF_CELL * cell_edge * picture_per_image / typical
    } else {
        LEGEND_ARROW_PX
    };
    let cell_px = cell_edge * picture_per_image;
    let longest_drawn = CUT_AT_CELLS * cell_px / px_per_shift;
    let clipped = lengths.iter().filter(|&&l| l > longest_drawn).count();
    let reference = nice_floor(LEGEND_ARROW_PX.min(cell_px) / px_per_shift);
    let decimals = (-reference.log10().floor()).clamp(0.0, 9.0) as usize;
    let mut legend = vec![(
        Symbol::Arrow(reference * px_per_shift, ARROW),
        format!("{reference:.decimals$} px local shift"),
    )];
    if clipped > 0 {
        legend.push((
            Symbol::Arrow(CUT_AT_CELLS * cell_px, ARROW),
            format!(
                "longer shifts, cut at {} px ({clipped})",
                short_number(longest_drawn)
            ),
        ));
    }
    if invalid > 0 {
        legend.push((Symbol::Cell(INVALID), format!("invalid tile ({invalid})")));
    }
    if rejected > 0 {
        legend.push((
            Symbol::Cross(NO_DATA),
            format!("frame rejected in this tile ({rejected})"),
        ));
    }
    let draw =
        move |chart: &mut super::panel::ImageChart, scale: f64| {
            draw_cells(
                chart,
                &cells,
                frame.shifts.iter().map(Option::is_none),
                0.35,
            )?;
            let centre = |t: &TileBox| {
                (
                    t.x0 as f64 + t.w as f64 / 2.0,
                    t.y0 as f64 + t.h as f64 / 2.0,
                )
            };
            let image_per_shift = px_per_shift / scale;
            let head = 9.0 / scale;
            for (tile, shift) in frame.tiles.iter().zip(frame.shifts) {
                let Some(shift) = shift else { continue };
                let from = centre(tile);
                if shift.dx.is_finite() && shift.dy.is_finite() {
                    let (dx, dy) = (f64::from(shift.dx), f64::from(shift.dy));
                    let cut = (longest_drawn / dx.hypot(dy)).min(1.0);
                    let to = (
                        from.0 + image_per_shift * dx * cut,
                        from.1 + image_per_shift * dy * cut,
                    );
                    chart.draw_series(std::iter::once(Circle::new(from, 2, ARROW.filled())))?;
                    chart.draw_series(arrow_segments(from, to, head).into_iter().map(
                        |segment| PathElement::new(segment.to_vec(), ARROW.stroke_width(2)),
                    ))?;
                } else {
                    chart.draw_series(std::iter::once(Cross::new(
                        from,
                        6,
                        NO_DATA.stroke_width(2),
                    )))?;
                }
            }
            Ok(())
        };
    over_image(
        image,
        Overlay {
            title,
            dim: 0.6,
            legend,
            draw: Box::new(draw),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn image(rows: usize, cols: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(r, c)| ((r * 7 + c * 13) % 17) as f32)
    }

    fn count(p: &Picture, colour: RGBColor) -> usize {
        p.rgb
            .chunks(3)
            .filter(|px| px[0] == colour.0 && px[1] == colour.1 && px[2] == colour.2)
            .count()
    }

    #[test]
    fn arrows_crosses_and_invalid_tiles_are_drawn() {
        let tiles = tlr_core::tile::tile_grid(256, 256, 64, 0.25).unwrap();
        let shifts: Vec<Option<Shift>> = tiles
            .iter()
            .map(|t| match t.index {
                0 => None,
                1 => Some(Shift::new(f32::NAN, f32::NAN)),
                i => Some(Shift::new(0.01 * i as f32, -0.2)),
            })
            .collect();
        let frame = WarpFrame {
            number: Some((3, 10)),
            name: "f.fits".into(),
            tiles: &tiles,
            shifts: &shifts,
        };
        let p = warp_field(image(256, 256).view(), &frame).unwrap();
        assert!(
            p.width >= 1024 && p.height >= 1024,
            "{} x {}",
            p.width,
            p.height
        );
        assert!(count(&p, ARROW) > 500, "arrows: {}", count(&p, ARROW));
        assert!(count(&p, NO_DATA) > 10, "crosses");
        assert!(count(&p, INVALID) > 100, "invalid tile outline");
        // The same bytes on another thread.
        let again = std::thread::scope(|s| {
            s.spawn(|| warp_field(image(256, 256).view(), &frame).unwrap())
                .join()
                .unwrap()
        });
        assert_eq!(p, again);
        // Mismatched lengths are an error, not a panic.
        let short = WarpFrame {
            shifts: &shifts[1..],
            ..frame
        };
        assert!(warp_field(image(256, 256).view(), &short).is_err());
    }

    #[test]
    fn edge_cases_draw_without_panics() {
        // All-NaN warp, no used frame, a 1x1 grid, a tiny image, a NaN image, a huge shift.
        let one = [TileBox {
            index: 0,
            x0: 0,
            y0: 0,
            w: 3,
            h: 2,
        }];
        for (img, shift, number) in [
            (image(2, 3), Some(Shift::new(f32::NAN, f32::NAN)), None),
            (image(2, 3), None, Some((1, 1))),
            (image(2, 3), Some(Shift::new(1e30, -1e30)), Some((1, 1))),
            (
                Array2::from_elem((2, 3), f32::NAN),
                Some(Shift::ZERO),
                Some((1, 1)),
            ),
        ] {
            let frame = WarpFrame {
                number,
                name: String::new(),
                tiles: &one,
                shifts: &[shift],
            };
            let p = warp_field(img.view(), &frame).unwrap();
            assert_eq!(p.rgb.len(), (p.width * p.height * 3) as usize);
        }
        let none = WarpFrame {
            number: None,
            name: String::new(),
            tiles: &[],
            shifts: &[],
        };
        assert!(warp_field(image(1, 1).view(), &none).is_ok());
        assert!(warp_field(Array2::zeros((0, 4)).view(), &none).is_err());
    }
}
