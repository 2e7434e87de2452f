//! `invalid_tile_map.png`: the tile grid over the image, invalid tiles filled red, with a legend that
//! counts them and names the most common reasons.
//!
//! What it does not: decide validity (the tile reports carry it).

use ndarray::ArrayView2;

use super::panel::{cells, draw_cells, over_image, Overlay, Symbol};
use super::{Picture, INVALID};
use tlr_core::TileBox;

/// Reasons listed in the legend; the rest are counted as "other".
const MAX_REASONS: usize = 3;

/// Draws the tile map over `image`: `tiles[i]` is invalid when `invalid[i]` is `Some(reason)`.
pub(crate) fn tile_map(
    image: ArrayView2<f32>,
    tiles: &[TileBox],
    invalid: &[Option<&str>],
) -> Result<Picture, String> {
    if invalid.len() != tiles.len() {
        return Err(format!(
            "{} validity flags for {} tiles",
            invalid.len(),
            tiles.len()
        ));
    }
    let (rows, cols) = image.dim();
    let cells = cells(tiles, rows, cols);
    let bad = invalid.iter().filter(|r| r.is_some()).count();
    // Reasons by count, then by text: a deterministic order.
    let mut reasons: Vec<(usize, &str)> = Vec::new();
    for reason in invalid.iter().flatten() {
        let reason = short_reason(reason);
        match reasons.iter_mut().find(|(_, r)| *r == reason) {
            Some((n, _)) => *n += 1,
            None => reasons.push((1, reason)),
        }
    }
    reasons.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let mut legend = vec![(
        Symbol::Outline,
        format!("valid tile ({})", tiles.len() - bad),
    )];
    if bad == 0 {
        legend.push((Symbol::Cell(INVALID), "invalid tile (none)".to_string()));
    }
    for (n, reason) in reasons.iter().take(MAX_REASONS) {
        legend.push((Symbol::Cell(INVALID), format!("invalid: {reason} ({n})")));
    }
    let others: usize = reasons.iter().skip(MAX_REASONS).map(|(n, _)| n).sum();
    if others > 0 {
        legend.push((
            Symbol::Cell(INVALID),
            format!("invalid: other reasons ({others})"),
        ));
    }
    let title = vec![
        format!("Invalid tiles: {bad} of {}", tiles.len()),
        "tiles drawn as the cells of the tile grid (invalid_tile_map.fits: 1 = invalid)"
            .to_string(),
    ];
    let draw = move |chart: &mut super::panel::ImageChart, _scale: f64| {
        draw_cells(chart, &cells, invalid.iter().map(Option::is_some), 0.45)
    };
    over_image(
        image,
        Overlay {
            title,
            dim: 0.85,
            legend,
            draw: Box::new(draw),
        },
    )
}

/// A reason cut to its first clause (before `:` or `(`), at most 48 characters.
fn short_reason(reason: &str) -> &str {
    let end = reason.find([':', '(']).unwrap_or(reason.len());
    let cut = reason[..end].trim_end();
    match cut.char_indices().nth(48) {
        Some((i, _)) => &cut[..i],
        None => cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn invalid_tiles_are_red_over_the_image() {
        let image = Array2::from_shape_fn((200, 300), |(r, c)| (r + c) as f32);
        let tiles = tlr_core::tile::tile_grid(200, 300, 64, 0.25).unwrap();
        let invalid: Vec<Option<&str>> = tiles
            .iter()
            .map(|t| (t.index == 5).then_some("too few frames: 3 of 10"))
            .collect();
        let p = tile_map(image.view(), &tiles, &invalid).unwrap();
        // The enlarged image (3x: 900 x 600) with room for labels and legend.
        assert!(
            p.width > 900 && p.height > 600,
            "{} x {}",
            p.width,
            p.height
        );
        let red = p
            .rgb
            .chunks(3)
            .filter(|px| px[0] > 150 && px[1] < 90 && px[2] < 90)
            .count();
        assert!(red > 1000, "red pixels {red}");
        assert_eq!(short_reason("too few frames: 3 of 10"), "too few frames");
        assert_eq!(short_reason(&"x".repeat(100)).len(), 48);
    }

    #[test]
    fn edge_cases_draw_without_panics() {
        let image = Array2::from_elem((1, 1), 1.0f32);
        let one = [TileBox {
            index: 0,
            x0: 0,
            y0: 0,
            w: 1,
            h: 1,
        }];
        assert!(tile_map(image.view(), &one, &[Some("all of it")]).is_ok());
        assert!(tile_map(image.view(), &one, &[None]).is_ok());
        assert!(tile_map(image.view(), &[], &[]).is_ok());
        assert!(tile_map(image.view(), &one, &[]).is_err());
        // Many distinct reasons: three listed, the rest counted.
        let tiles = tlr_core::tile::tile_grid(100, 100, 20, 0.0).unwrap();
        let reasons: Vec<String> = (0..tiles.len()).map(|i| format!("reason {i}")).collect();
        let invalid: Vec<Option<&str>> = reasons.iter().map(|r| Some(r.as_str())).collect();
        assert!(tile_map(image.view(), &tiles, &invalid).is_ok());
    }
}
