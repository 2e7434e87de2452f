//! The frame shared by the pictures drawn over the image (warp field, tile map): title lines, the
//! image (auto-stretched as the preview, dimmed) on image-pixel axes with row 0 at the top, the
//! caller's overlay, and a legend of symbols under it; and the tile cells those overlays colour.
//!
//! The image is shown at a whole enlargement factor up to [`PANEL_EDGE_PX`] (a 256² image at 4x), or
//! binned down to it (a 4k image at 1/4), so that tiles, arrows and text keep a readable size.
//! What it does not: decide what the overlay shows.

use ndarray::{Array2, ArrayView2};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{label, text, Drawn, Picture, INK, INVALID, TEXT_PX, TITLE_PX};
use tlr_core::TileBox;

/// The image's longer edge in the picture, px (at most; small images take the largest whole factor).
pub(crate) const PANEL_EDGE_PX: usize = 1024;
/// The narrowest picture, px: room for the title and the legend next to a narrow image.
const MIN_WIDTH_PX: u32 = 720;
const MARGIN_PX: u32 = 12;
const Y_LABELS_PX: u32 = 70;
const X_LABELS_PX: u32 = 50;
const LEGEND_ROW_PX: u32 = 26;
/// The outline of the tile cells.
const GRID: RGBColor = RGBColor(175, 175, 175);

/// The chart over the image: x and y in image pixels (y = row, growing downwards).
pub(crate) type ImageChart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws an overlay on the chart; gets the picture pixels per image pixel.
pub(crate) type DrawOverlay<'a> = Box<dyn FnOnce(&mut ImageChart, f64) -> Drawn + 'a>;

/// A symbol of the legend.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Symbol {
    /// A tile cell filled (translucent) and outlined in this colour.
    Cell(RGBColor),
    /// An arrow of this many picture pixels.
    Arrow(f64, RGBColor),
    /// A cross.
    Cross(RGBColor),
    /// A cell of the grid, not filled.
    Outline,
}

/// What a picture over the image shows, besides the image.
pub(crate) struct Overlay<'a> {
    /// First line large, the others normal.
    pub title: Vec<String>,
    /// Grey level factor of the image under the overlay (1 = as the preview).
    pub dim: f32,
    pub legend: Vec<(Symbol, String)>,
    /// Draws on the chart (image pixel coordinates); gets the picture pixels per image pixel.
    pub draw: DrawOverlay<'a>,
}

/// Size of the image in the picture: `(rows, cols)`.
pub(crate) fn panel_size(rows: usize, cols: usize) -> (usize, usize) {
    let edge = rows.max(cols).max(1);
    if edge <= PANEL_EDGE_PX {
        let k = (PANEL_EDGE_PX / edge).max(1);
        (rows * k, cols * k)
    } else {
        let s = PANEL_EDGE_PX as f64 / edge as f64;
        let size = |n: usize| ((n as f64 * s).round() as usize).max(1);
        (size(rows), size(cols))
    }
}

/// Draws `overlay` over `image` (at least one pixel on each side).
pub(crate) fn over_image(image: ArrayView2<f32>, overlay: Overlay) -> Result<Picture, String> {
    let (rows, cols) = image.dim();
    if rows == 0 || cols == 0 {
        return Err(format!(
            "an image of {rows} x {cols} pixels has nothing to draw on"
        ));
    }
    let (ph, pw) = panel_size(rows, cols);
    let (ph, pw) = (ph as u32, pw as u32);
    let title_h = TITLE_PX + 10 + (overlay.title.len().saturating_sub(1) as u32) * (TEXT_PX + 6);
    let width = (2 * MARGIN_PX + Y_LABELS_PX + pw + 20).max(MIN_WIDTH_PX);
    let legend_rows = legend_rows(&overlay.legend, width - 2 * MARGIN_PX);
    let height = MARGIN_PX
        + title_h
        + ph
        + X_LABELS_PX
        + legend_rows.len() as u32 * LEGEND_ROW_PX
        + MARGIN_PX;
    let Overlay {
        title,
        dim,
        legend,
        draw,
    } = overlay;
    Picture::draw(width, height, |root| {
        root.fill(&WHITE)?;
        let mut y = MARGIN_PX as i32;
        for (i, line) in title.iter().enumerate() {
            let px = if i == 0 { TITLE_PX } else { TEXT_PX };
            label(root, line, (MARGIN_PX as i32, y), &text(px, INK))?;
            y += px as i32 + if i == 0 { 10 } else { 6 };
        }
        // The chart area: exactly the label areas plus the image, centred.
        let chart_w = Y_LABELS_PX + pw;
        let left = (width - chart_w) / 2;
        let top = MARGIN_PX + title_h;
        let area = root.margin(
            top,
            height - top - ph - X_LABELS_PX,
            left,
            width - left - chart_w,
        );
        let mut chart = ChartBuilder::on(&area)
            .x_label_area_size(X_LABELS_PX)
            .y_label_area_size(Y_LABELS_PX)
            .build_cartesian_2d(0f64..cols as f64, rows as f64..0f64)?;
        let (xr, yr) = chart.plotting_area().get_pixel_range();
        let (w, h) = (xr.len().max(1), yr.len().max(1));
        let grey = resampled(image, h, w);
        let rgb: Vec<u8> = grey
            .iter()
            .flat_map(|&g| {
                let g = (f32::from(g) * dim).round().clamp(0.0, 255.0) as u8;
                [g, g, g]
            })
            .collect();
        if let Some(bitmap) = BitMapElement::with_owned_buffer((0, 0), (w as u32, h as u32), rgb) {
            chart.plotting_area().strip_coord_spec().draw(&bitmap)?;
        }
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("x (px)")
            .y_desc("y (px)")
            .label_style(text(TEXT_PX - 2, INK))
            .axis_desc_style(text(TEXT_PX, INK))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        let scale = w as f64 / cols as f64;
        draw(&mut chart, scale)?;
        let mut y = (top + ph + X_LABELS_PX) as i32;
        for row in legend_rows {
            let mut x = MARGIN_PX as i32;
            for i in row {
                let (symbol, words) = &legend[i];
                draw_symbol(root, *symbol, (x, y + LEGEND_ROW_PX as i32 / 2 - 2))?;
                let w = symbol_width(*symbol) as i32;
                label(root, words, (x + w, y + 4), &text(TEXT_PX, INK))?;
                x += item_width(*symbol, words) as i32;
            }
            y += LEGEND_ROW_PX as i32;
        }
        Ok(())
    })
}

/// Width of a legend symbol and the gap after it, px.
fn symbol_width(symbol: Symbol) -> u32 {
    match symbol {
        Symbol::Arrow(len, _) if len.is_finite() => len.clamp(0.0, 400.0) as u32 + 10,
        _ => 30,
    }
}

/// Approximate width of a legend item, px: the symbol and the text at [`TEXT_PX`].
fn item_width(symbol: Symbol, words: &str) -> u32 {
    symbol_width(symbol) + (words.chars().count() as u32 * TEXT_PX * 3).div_ceil(5) + 24
}

/// The legend items in rows that fit `width` (indices into `items`).
fn legend_rows(items: &[(Symbol, String)], width: u32) -> Vec<Vec<usize>> {
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut used = 0;
    for (i, (symbol, words)) in items.iter().enumerate() {
        let w = item_width(*symbol, words);
        match rows.last_mut() {
            Some(row) if used + w <= width => row.push(i),
            _ => {
                rows.push(vec![i]);
                used = 0;
            }
        }
        used += w;
    }
    rows
}

/// Draws a legend symbol with its left end at `(x, y)` (vertical centre).
fn draw_symbol(
    area: &DrawingArea<BitMapBackend, Shift>,
    symbol: Symbol,
    (x, y): (i32, i32),
) -> Drawn {
    match symbol {
        Symbol::Cell(c) => {
            area.draw(&Rectangle::new(
                [(x, y - 8), (x + 22, y + 8)],
                c.mix(0.45).filled(),
            ))?;
            area.draw(&Rectangle::new(
                [(x, y - 8), (x + 22, y + 8)],
                c.stroke_width(2),
            ))
        }
        Symbol::Arrow(len, c) => {
            let to = (x as f64 + len.clamp(0.0, 400.0), y as f64);
            for segment in arrow_segments((x as f64, y as f64), to, 8.0) {
                let points: Vec<(i32, i32)> = segment
                    .iter()
                    .map(|&(a, b)| (a.round() as i32, b.round() as i32))
                    .collect();
                area.draw(&PathElement::new(points, c.stroke_width(2)))?;
            }
            Ok(())
        }
        Symbol::Outline => area.draw(&Rectangle::new(
            [(x, y - 8), (x + 22, y + 8)],
            GRID.stroke_width(1),
        )),
        Symbol::Cross(c) => {
            let (cx, cy) = (x + 11, y);
            area.draw(&Cross::new((cx, cy), 6, c.stroke_width(2)))
        }
    }
}

/// The shaft and the two halves of the head of an arrow from `from` to `to` with a head `head` long
/// (at most half the arrow), in any coordinates.
pub(crate) fn arrow_segments(from: (f64, f64), to: (f64, f64), head: f64) -> [[(f64, f64); 2]; 3] {
    let (vx, vy) = (to.0 - from.0, to.1 - from.1);
    let len = vx.hypot(vy);
    let h = head.min(0.5 * len);
    let (ux, uy) = if len > 0.0 {
        (vx / len, vy / len)
    } else {
        (0.0, 0.0)
    };
    // 28 degrees either side of the reversed direction
    let (c, s) = (28f64.to_radians().cos(), 28f64.to_radians().sin());
    let side = |sign: f64| {
        let bx = -(ux * c - uy * s * sign);
        let by = -(ux * s * sign + uy * c);
        (to.0 + h * bx, to.1 + h * by)
    };
    [[from, to], [to, side(1.0)], [to, side(-1.0)]]
}

/// `image` auto-stretched (as the preview) and resampled to `rows x cols`: each picture pixel is the
/// mean of the finite image pixels it covers (the nearest one when enlarging); NaN is black.
fn resampled(image: ArrayView2<f32>, rows: usize, cols: usize) -> Vec<u8> {
    let (ir, ic) = image.dim();
    let span = |o: usize, out: usize, n: usize| {
        let a = o * n / out;
        (a, ((o + 1) * n / out).max(a + 1).min(n))
    };
    let col_spans: Vec<(usize, usize)> = (0..cols).map(|x| span(x, cols, ic)).collect();
    let binned = Array2::from_shape_fn((rows, cols), |(y, x)| {
        let (r0, r1) = span(y, rows, ir);
        let (c0, c1) = col_spans[x];
        let (mut sum, mut n) = (0.0f64, 0u32);
        for r in r0..r1 {
            for &v in image.row(r).slice(ndarray::s![c0..c1]) {
                if v.is_finite() {
                    sum += f64::from(v);
                    n += 1;
                }
            }
        }
        if n > 0 {
            (sum / f64::from(n)) as f32
        } else {
            f32::NAN
        }
    });
    tlr_core::preview::stretch_to_u8(binned.view())
}

/// The cell of every tile in image pixels, `(x0, y0, x1, y1)`: the tile grid's partition of the image
/// (cell edges halfway between neighbouring tile centres, the outer ones on the image border), so that
/// overlapping tiles are drawn without overlap, as `invalid_tile_map.fits` lays them out.
pub(crate) fn cells(tiles: &[TileBox], rows: usize, cols: usize) -> Vec<(f64, f64, f64, f64)> {
    let centres = |of: &dyn Fn(&TileBox) -> f64| {
        let mut v: Vec<f64> = tiles.iter().map(of).collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    };
    let xs = centres(&|t| t.x0 as f64 + t.w as f64 / 2.0);
    let ys = centres(&|t| t.y0 as f64 + t.h as f64 / 2.0);
    let bounds = |axis: &[f64], c: f64, end: usize| {
        let i = axis.partition_point(|&v| v < c);
        let lo = if i == 0 {
            0.0
        } else {
            0.5 * (axis[i - 1] + axis[i])
        };
        let hi = if i + 1 >= axis.len() {
            end as f64
        } else {
            0.5 * (axis[i] + axis[i + 1])
        };
        (lo, hi)
    };
    tiles
        .iter()
        .map(|t| {
            let (x0, x1) = bounds(&xs, t.x0 as f64 + t.w as f64 / 2.0, cols);
            let (y0, y1) = bounds(&ys, t.y0 as f64 + t.h as f64 / 2.0, rows);
            (x0, y0, x1, y1)
        })
        .collect()
}

/// Draws the outline of every cell in thin grey, and the cells flagged in `invalid` filled red
/// (`alpha` opaque) and outlined.
pub(crate) fn draw_cells(
    chart: &mut ImageChart,
    cells: &[(f64, f64, f64, f64)],
    invalid: impl Iterator<Item = bool>,
    alpha: f64,
) -> Drawn {
    chart.draw_series(
        cells
            .iter()
            .map(|&(x0, y0, x1, y1)| Rectangle::new([(x0, y0), (x1, y1)], GRID.stroke_width(1))),
    )?;
    chart.draw_series(invalid.zip(cells).filter(|(bad, _)| *bad).flat_map(
        |(_, &(x0, y0, x1, y1))| {
            [
                Rectangle::new([(x0, y0), (x1, y1)], INVALID.mix(alpha).filled()),
                Rectangle::new([(x0, y0), (x1, y1)], INVALID.stroke_width(2)),
            ]
        },
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_are_readable_sizes() {
        assert_eq!(panel_size(256, 256), (1024, 1024));
        assert_eq!(panel_size(500, 650), (500, 650));
        assert_eq!(panel_size(4096, 4096), (1024, 1024));
        assert_eq!(panel_size(3000, 4000), (768, 1024));
        assert_eq!(panel_size(1, 1), (1024, 1024));
        assert_eq!(panel_size(1, 5000), (1, 1024));
    }

    #[test]
    fn cells_partition_the_image() {
        let tiles = tlr_core::tile::tile_grid(200, 300, 64, 0.25).unwrap();
        let all = cells(&tiles, 200, 300);
        let area: f64 = all.iter().map(|c| (c.2 - c.0) * (c.3 - c.1)).sum();
        assert!((area - 60_000.0).abs() < 1e-6, "{area}");
        let one = cells(&tiles[..1], 200, 300);
        assert_eq!(one, vec![(0.0, 0.0, 300.0, 200.0)]);
    }

    #[test]
    fn resampling_averages_and_enlarges() {
        let image = Array2::from_shape_fn((4, 4), |(r, c)| (r * 4 + c) as f32);
        assert_eq!(resampled(image.view(), 2, 2).len(), 4);
        let big = resampled(image.view(), 8, 8);
        assert_eq!(big.len(), 64);
        assert_eq!(big[0], big[1], "nearest pixel when enlarging");
        let nan = Array2::from_elem((3, 3), f32::NAN);
        assert!(resampled(nan.view(), 5, 5).iter().all(|&g| g == 0));
    }
}
