//! Small geometric types shared by every part of the method: tile boxes and sub-pixel shifts.
//!
//! Conventions (one place for all of them):
//! - Images are `ndarray::Array2<f32>` with shape `(rows, cols)` = `(NAXIS2, NAXIS1)`; `y` is the row,
//!   `x` the column; pixel `(r, c)` has its centre at integer coordinates `(y, x) = (r, c)`.
//!   Rows stay in file order (no flipping for ROWORDER).
//! - A [`Shift`] `{ dy, dx }` of a frame relative to a reference means: a feature at reference position
//!   `(y, x)` appears in the frame at `(y + dy, x + dx)`. The aligned frame is
//!   `aligned(y, x) = frame(y + dy, x + dx)`.
//!
//! What it does not: any computation beyond trivial arithmetic.

use serde::{Deserialize, Serialize};

/// Displacement of a frame relative to a reference, in pixels (see the module conventions).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Shift {
    /// Row (y) displacement in pixels.
    #[serde(deserialize_with = "f32_or_nan")]
    pub dy: f32,
    /// Column (x) displacement in pixels.
    #[serde(deserialize_with = "f32_or_nan")]
    pub dx: f32,
}

/// Reads an `f32` that JSON may hold as `null`. NaN is how a missing measurement travels (a frame
/// without stars has no FWHM), and serde_json writes NaN and the infinities as `null`: without this, a
/// file tlr wrote (a live checkpoint, a tile report) would not read back. `null` becomes NaN.
///
/// # Errors
/// A value that is neither a number nor `null`.
pub fn f32_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
}

impl Shift {
    /// A shift of `dy` rows and `dx` columns.
    pub const fn new(dy: f32, dx: f32) -> Self {
        Self { dy, dx }
    }

    /// The zero shift.
    pub const ZERO: Shift = Shift { dy: 0.0, dx: 0.0 };

    /// Euclidean length in pixels.
    pub fn norm(self) -> f32 {
        self.dy.hypot(self.dx)
    }
}

impl std::ops::Add for Shift {
    type Output = Shift;
    fn add(self, rhs: Shift) -> Shift {
        Shift::new(self.dy + rhs.dy, self.dx + rhs.dx)
    }
}

impl std::ops::Sub for Shift {
    type Output = Shift;
    fn sub(self, rhs: Shift) -> Shift {
        Shift::new(self.dy - rhs.dy, self.dx - rhs.dx)
    }
}

/// One tile of the output image: its position in the fixed tile order and its pixel box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TileBox {
    /// Position in the tile order (0-based). Blending applies tiles in this order.
    pub index: usize,
    /// First column.
    pub x0: usize,
    /// First row.
    pub y0: usize,
    /// Width in columns.
    pub w: usize,
    /// Height in rows.
    pub h: usize,
}

impl TileBox {
    /// Row range `y0..y0 + h`.
    pub fn rows(&self) -> std::ops::Range<usize> {
        self.y0..self.y0 + self.h
    }

    /// Column range `x0..x0 + w`.
    pub fn cols(&self) -> std::ops::Range<usize> {
        self.x0..self.x0 + self.w
    }

    /// True when pixel `(row, col)` lies inside the box.
    pub fn contains(&self, row: usize, col: usize) -> bool {
        self.rows().contains(&row) && self.cols().contains(&col)
    }
}
