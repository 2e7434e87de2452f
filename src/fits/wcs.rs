//! A frame's celestial WCS (FITS WCS papers I/II: `CTYPEi`, `CRVALi`, `CRPIXi` and the linear part as
//! `CDi_j`, `PCi_j` x `CDELTi`, or `CDELTi` with `CROTA2`; SIP distortion cards kept as they are), and
//! the same WCS moved to another pixel grid: a result's grid is given by one affine map from its pixels
//! to the reference frame's pixels ([`PixelMap`]), and [`Wcs::moved`] makes the WCS valid for it.
//!
//! What it does not: evaluate the projection (no world coordinates are computed), read or write
//! files, handle more than two axes, or invent a WCS: a header without one gives `None`.

use super::card::{card_value, clean_string, number};
use super::{Card, CardValue, HeaderCard};

/// An affine map from a result's pixels to the reference frame's pixels, both 0-based `(x, y)` =
/// (column, row) with pixel centres at integers ([`crate::geom`]): `reference = matrix · output +
/// offset`. The one place where the output's geometry relative to the reference frame is stated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelMap {
    /// Linear part, row-major: `[[∂xr/∂xo, ∂xr/∂yo], [∂yr/∂xo, ∂yr/∂yo]]`.
    pub matrix: [[f64; 2]; 2],
    /// `(x, y)` of the reference pixel that output pixel `(0, 0)` falls on.
    pub offset: [f64; 2],
}

/// Largest deviation of a [`PixelMap`]'s linear part from the identity for which SIP distortion is
/// kept ([`PixelMap::is_near_translation`]).
pub const SIP_KEEP_TOLERANCE: f64 = 1e-3;

impl PixelMap {
    /// The output grid is the reference frame's grid.
    pub const IDENTITY: PixelMap = PixelMap {
        matrix: [[1.0, 0.0], [0.0, 1.0]],
        offset: [0.0, 0.0],
    };

    /// This map after cropping the output to the area starting at output pixel `(x0, y0)`: the
    /// cropped image's pixel `(0, 0)` is this map's `(x0, y0)`.
    pub fn cropped(&self, x0: f64, y0: f64) -> PixelMap {
        let [x, y] = self.apply([x0, y0]);
        PixelMap {
            matrix: self.matrix,
            offset: [x, y],
        }
    }

    /// The reference pixel of output pixel `p` (0-based `(x, y)`).
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        let m = &self.matrix;
        [
            m[0][0] * p[0] + m[0][1] * p[1] + self.offset[0],
            m[1][0] * p[0] + m[1][1] * p[1] + self.offset[1],
        ]
    }

    /// True when the map is a pure translation (SIP distortion then carries over unchanged).
    pub fn is_translation(&self) -> bool {
        self.matrix == Self::IDENTITY.matrix
    }

    /// True when the linear part differs from the identity by at most `SIP_KEEP_TOLERANCE` (0.001) per
    /// entry: SIP distortion kept unchanged is then off by at most that fraction of the distortion
    /// plus of its gradient times the field radius (e.g. 0.01 px for 10 px of distortion), far below
    /// a star's centroid error. The mean geometry of a sequence is such a map unless the field
    /// rotated or stretched noticeably (0.06 degrees).
    pub fn is_near_translation(&self) -> bool {
        let i = Self::IDENTITY.matrix;
        (0..2).all(|r| (0..2).all(|c| (self.matrix[r][c] - i[r][c]).abs() <= SIP_KEEP_TOLERANCE))
    }

    fn inverse_matrix(&self) -> Option<[[f64; 2]; 2]> {
        let m = &self.matrix;
        let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
        (det.is_finite() && det != 0.0).then(|| {
            [
                [m[1][1] / det, -m[0][1] / det],
                [-m[1][0] / det, m[0][0] / det],
            ]
        })
    }
}

/// Prefixes of the SIP distortion cards (`A_ORDER`, `A_0_2`, `BP_1_1`, ...).
const SIP_PREFIXES: [&str; 4] = ["A_", "B_", "AP_", "BP_"];
/// WCS cards other than the axes' own that a result keeps as they are.
const FRAME_KEYS: [&str; 5] = ["EQUINOX", "RADESYS", "RADECSYS", "LONPOLE", "LATPOLE"];

/// True for the keywords a WCS is read from (the cards a frame header keeps for [`Wcs::from_cards`]).
pub fn is_wcs_key(key: &str) -> bool {
    let axis = |prefix: &str| {
        key.strip_prefix(prefix)
            .is_some_and(|rest| matches!(rest, "1" | "2"))
    };
    let matrix = |prefix: &str| {
        key.strip_prefix(prefix)
            .is_some_and(|rest| matches!(rest, "1_1" | "1_2" | "2_1" | "2_2"))
    };
    ["CTYPE", "CUNIT", "CRVAL", "CRPIX", "CDELT", "CROTA"]
        .iter()
        .any(|p| axis(p))
        || matrix("CD")
        || matrix("PC")
        || FRAME_KEYS.contains(&key)
        || SIP_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// A two-axis celestial WCS with its linear part as a CD matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Wcs {
    /// `CTYPE1`, `CTYPE2` (e.g. `RA---TAN`, `DEC--TAN`, or `-SIP` forms).
    pub ctype: [String; 2],
    /// `CUNIT1`, `CUNIT2` when given.
    pub cunit: [Option<String>; 2],
    /// `CRVAL1`, `CRVAL2`: world coordinates of the reference point.
    pub crval: [f64; 2],
    /// `CRPIX1`, `CRPIX2`: the reference point in 1-based FITS pixels.
    pub crpix: [f64; 2],
    /// `CDi_j` (world units per pixel), row-major.
    pub cd: [[f64; 2]; 2],
    /// `EQUINOX`, `RADESYS` (from `RADECSYS` too), `LONPOLE`, `LATPOLE`, as found.
    pub frame: Vec<(String, String)>,
    /// SIP distortion cards as found (valid for a moved WCS only when the move is a translation).
    pub sip: Vec<HeaderCard>,
}

impl Wcs {
    /// The WCS of a header: `Ok(None)` when it has none (no `CTYPE1`/`CTYPE2`/`CRVAL1`), `Err` with the
    /// reason when it has one that is incomplete or not a number (then none is written).
    ///
    /// # Errors
    /// A missing `CRPIXi`/`CRVALi`, no linear part (`CDi_j`, `CDELTi`), a singular one.
    pub fn from_cards(cards: &[HeaderCard]) -> Result<Option<Wcs>, String> {
        let text = |key: &str| clean_string(card_value(cards, key));
        let (Some(c1), Some(c2)) = (text("CTYPE1"), text("CTYPE2")) else {
            return Ok(None);
        };
        let num = |key: &str| {
            number(cards, key).ok_or_else(|| format!("{key} is missing or not a number"))
        };
        let crval = [num("CRVAL1")?, num("CRVAL2")?];
        let crpix = [num("CRPIX1")?, num("CRPIX2")?];
        let has = |key: &str| card_value(cards, key).is_some();
        let keys = |p: &str| {
            [
                [format!("{p}1_1"), format!("{p}1_2")],
                [format!("{p}2_1"), format!("{p}2_2")],
            ]
        };
        let cd = if keys("CD").iter().flatten().any(|k| has(k)) {
            keys("CD").map(|row| row.map(|k| number(cards, &k).unwrap_or(0.0)))
        } else {
            let cdelt = [num("CDELT1")?, num("CDELT2")?];
            let pc = if keys("PC").iter().flatten().any(|k| has(k)) {
                let identity =
                    |k: &str| f64::from(u8::from(k.ends_with("1_1") || k.ends_with("2_2")));
                keys("PC").map(|row| row.map(|k| number(cards, &k).unwrap_or_else(|| identity(&k))))
            } else {
                let rho = number(cards, "CROTA2")
                    .or_else(|| number(cards, "CROTA1"))
                    .unwrap_or(0.0)
                    .to_radians();
                // Calabretta & Greisen 2002, eq. 189, written as PC: CD = CDELT_i * PC_ij.
                let r = cdelt[1] / cdelt[0];
                [[rho.cos(), -r * rho.sin()], [rho.sin() / r, rho.cos()]]
            };
            [
                [cdelt[0] * pc[0][0], cdelt[0] * pc[0][1]],
                [cdelt[1] * pc[1][0], cdelt[1] * pc[1][1]],
            ]
        };
        let det = cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0];
        if !(det.is_finite() && det != 0.0) {
            return Err("the linear part (CD matrix) is singular".into());
        }
        let frame = FRAME_KEYS
            .iter()
            .filter_map(|&k| {
                let name = if k == "RADECSYS" { "RADESYS" } else { k };
                text(k).map(|v| (name.to_string(), v))
            })
            .fold(Vec::<(String, String)>::new(), |mut acc, (k, v)| {
                if !acc.iter().any(|(have, _)| *have == k) {
                    acc.push((k, v));
                }
                acc
            });
        let sip = cards
            .iter()
            .filter(|c| c.value.is_some() && SIP_PREFIXES.iter().any(|p| c.key.starts_with(p)))
            .cloned()
            .collect();
        Ok(Some(Wcs {
            ctype: [c1, c2],
            cunit: [text("CUNIT1"), text("CUNIT2")],
            crval,
            crpix,
            cd,
            frame,
            sip,
        }))
    }

    /// This WCS (of the reference frame) made valid for an output grid whose pixels `map` sends to
    /// the reference frame's: the same world coordinates at the same sky positions. SIP distortion is
    /// kept for a translation or a map within `SIP_KEEP_TOLERANCE` (0.001) of one
    /// ([`PixelMap::is_near_translation`]) and dropped otherwise (the second value is then false).
    /// `None` when `map` is singular.
    pub fn moved(&self, map: &PixelMap) -> Option<(Wcs, bool)> {
        let inverse = map.inverse_matrix()?;
        // reference(1-based) = M (output(1-based) - 1) + t + 1, so
        // reference - CRPIX = M (output - CRPIX'), CRPIX' = 1 + M^-1 (CRPIX - 1 - t).
        let d = [
            self.crpix[0] - 1.0 - map.offset[0],
            self.crpix[1] - 1.0 - map.offset[1],
        ];
        let crpix = [
            1.0 + inverse[0][0] * d[0] + inverse[0][1] * d[1],
            1.0 + inverse[1][0] * d[0] + inverse[1][1] * d[1],
        ];
        let (c, m) = (&self.cd, &map.matrix);
        let cd = [
            [
                c[0][0] * m[0][0] + c[0][1] * m[1][0],
                c[0][0] * m[0][1] + c[0][1] * m[1][1],
            ],
            [
                c[1][0] * m[0][0] + c[1][1] * m[1][0],
                c[1][0] * m[0][1] + c[1][1] * m[1][1],
            ],
        ];
        let keeps_sip = map.is_near_translation() || self.sip.is_empty();
        let mut moved = Wcs {
            crpix,
            cd,
            ..self.clone()
        };
        if !keeps_sip {
            moved.sip.clear();
            moved.ctype = moved.ctype.map(|t| t.trim_end_matches("-SIP").to_string());
        }
        Some((moved, keeps_sip))
    }

    /// The header cards of this WCS: axes, CD matrix, frame cards, SIP cards.
    pub fn cards(&self) -> Vec<Card> {
        let mut cards = Vec::new();
        for i in 0..2 {
            let n = i + 1;
            cards.push(Card::new(
                &format!("CTYPE{n}"),
                CardValue::Str(self.ctype[i].clone()),
                "projection, axis type",
            ));
            if let Some(unit) = &self.cunit[i] {
                cards.push(Card::new(
                    &format!("CUNIT{n}"),
                    CardValue::Str(unit.clone()),
                    "unit of the axis",
                ));
            }
        }
        let points = [
            (
                "CRVAL",
                self.crval,
                "world coordinate of the reference point",
            ),
            (
                "CRPIX",
                self.crpix,
                "reference point in this image's pixels",
            ),
        ];
        for (key, values, comment) in points {
            for (i, v) in values.iter().enumerate() {
                cards.push(Card::new(
                    &format!("{key}{}", i + 1),
                    CardValue::Float(*v),
                    comment,
                ));
            }
        }
        for (i, row) in self.cd.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                cards.push(Card::new(
                    &format!("CD{}_{}", i + 1, j + 1),
                    CardValue::Float(*v),
                    "linear part, world units per pixel",
                ));
            }
        }
        for (key, value) in &self.frame {
            let value = match value.parse::<f64>() {
                Ok(x) if x.is_finite() && key != "RADESYS" => CardValue::Float(x),
                _ => CardValue::Str(value.clone()),
            };
            cards.push(Card::new(key, value, "celestial reference frame"));
        }
        for card in &self.sip {
            let text = card.value.clone().unwrap_or_default();
            let value = match text.replace(['D', 'd'], "E").parse::<f64>() {
                Ok(x) if x.is_finite() && card.key.ends_with("ORDER") => CardValue::Int(x as i64),
                Ok(x) if x.is_finite() => CardValue::Float(x),
                _ => continue,
            };
            cards.push(Card::new(&card.key, value, "SIP distortion"));
        }
        cards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(key: &str, value: &str) -> HeaderCard {
        HeaderCard {
            key: key.into(),
            value: Some(value.into()),
            comment: String::new(),
        }
    }

    fn crota_header() -> Vec<HeaderCard> {
        [
            ("CTYPE1", "RA---TAN"),
            ("CTYPE2", "DEC--TAN"),
            ("CRVAL1", "299.92497496587"),
            ("CRVAL2", "22.7220461064501"),
            ("CRPIX1", "652."),
            ("CRPIX2", "488."),
            ("CDELT1", "0.000421364379084967"),
            ("CDELT2", "0.000421364379084967"),
            ("CROTA2", "303.1256"),
            ("RADECSYS", "FK5"),
            ("EQUINOX", "2000"),
        ]
        .map(|(k, v)| card(k, v))
        .to_vec()
    }

    #[test]
    fn crota_becomes_a_cd_matrix() {
        let wcs = Wcs::from_cards(&crota_header()).unwrap().unwrap();
        let (c, s) = (
            303.1256f64.to_radians().cos(),
            303.1256f64.to_radians().sin(),
        );
        let d = 0.000421364379084967;
        let want = [[d * c, -d * s], [d * s, d * c]];
        let got = wcs.cd.iter().flatten().zip(want.iter().flatten());
        assert!(
            got.into_iter().all(|(g, w)| (g - w).abs() < 1e-15),
            "{:?}",
            wcs.cd
        );
        assert_eq!(
            wcs.frame,
            vec![
                ("EQUINOX".to_string(), "2000".to_string()),
                ("RADESYS".to_string(), "FK5".to_string())
            ]
        );
    }

    #[test]
    fn no_wcs_is_none_and_an_incomplete_one_is_an_error() {
        assert_eq!(Wcs::from_cards(&[card("OBJECT", "M27")]), Ok(None));
        let mut cards = crota_header();
        cards.retain(|c| c.key != "CRPIX2");
        assert!(Wcs::from_cards(&cards).unwrap_err().contains("CRPIX2"));
        let mut cards = crota_header();
        cards.retain(|c| !c.key.starts_with("CDELT"));
        assert!(Wcs::from_cards(&cards).unwrap_err().contains("CDELT1"));
    }

    #[test]
    fn moving_keeps_the_sky_at_the_same_place() {
        let wcs = Wcs::from_cards(&crota_header()).unwrap().unwrap();
        let (same, sip) = wcs.moved(&PixelMap::IDENTITY).unwrap();
        assert!(sip);
        assert_eq!(same, wcs);
        // A crop: output (0, 0) is reference (10, 4); CRPIX moves by that much.
        let (cropped, _) = wcs.moved(&PixelMap::IDENTITY.cropped(10.0, 4.0)).unwrap();
        assert_eq!(cropped.crpix, [642.0, 484.0]);
        assert_eq!(cropped.cd, wcs.cd);
        // A general affine map (2x binning plus a shift): the linear world offset of any output pixel
        // from CRVAL equals that of its reference pixel.
        let map = PixelMap {
            matrix: [[2.0, 0.1], [-0.2, 1.5]],
            offset: [3.5, -7.25],
        };
        let (moved, _) = wcs.moved(&map).unwrap();
        let world = |w: &Wcs, p1: [f64; 2]| {
            let d = [p1[0] - w.crpix[0], p1[1] - w.crpix[1]];
            [
                w.cd[0][0] * d[0] + w.cd[0][1] * d[1],
                w.cd[1][0] * d[0] + w.cd[1][1] * d[1],
            ]
        };
        for out0 in [[0.0, 0.0], [100.0, 37.0], [-5.0, 400.0]] {
            let ref0 = map.apply(out0);
            let a = world(&moved, [out0[0] + 1.0, out0[1] + 1.0]);
            let b = world(&wcs, [ref0[0] + 1.0, ref0[1] + 1.0]);
            assert!(
                (a[0] - b[0]).abs() < 1e-12 && (a[1] - b[1]).abs() < 1e-12,
                "{a:?} {b:?}"
            );
        }
    }

    #[test]
    fn sip_is_kept_for_translations_only() {
        let mut cards = crota_header();
        cards[0] = card("CTYPE1", "RA---TAN-SIP");
        cards[1] = card("CTYPE2", "DEC--TAN-SIP");
        cards.push(card("A_ORDER", "2"));
        cards.push(card("A_0_2", "1.5E-6"));
        let wcs = Wcs::from_cards(&cards).unwrap().unwrap();
        assert_eq!(wcs.sip.len(), 2);
        let (shifted, kept) = wcs.moved(&PixelMap::IDENTITY.cropped(2.0, 2.0)).unwrap();
        assert!(kept && shifted.sip.len() == 2);
        assert!(shifted
            .cards()
            .iter()
            .any(|c| c.key == "A_ORDER" && c.value == CardValue::Int(2)));
        let scaled = PixelMap {
            matrix: [[2.0, 0.0], [0.0, 2.0]],
            offset: [0.0, 0.0],
        };
        let (binned, kept) = wcs.moved(&scaled).unwrap();
        assert!(!kept && binned.sip.is_empty());
        // The mean geometry's tiny rotation keeps it; a rotation of 0.1 degrees does not.
        for (degrees, keeps) in [(0.03f64, true), (0.1, false)] {
            let (s, c) = degrees.to_radians().sin_cos();
            let rotated = PixelMap {
                matrix: [[c, -s], [s, c]],
                offset: [0.4, -0.2],
            };
            let (moved, kept) = wcs.moved(&rotated).unwrap();
            assert_eq!(kept, keeps, "{degrees} deg");
            assert_eq!(moved.sip.len(), if keeps { 2 } else { 0 });
        }
        assert_eq!(
            binned.ctype,
            ["RA---TAN".to_string(), "DEC--TAN".to_string()]
        );
    }

    #[test]
    fn wcs_keys() {
        for key in [
            "CRPIX1", "CD2_1", "PC1_2", "CROTA2", "RADECSYS", "A_ORDER", "BP_0_1",
        ] {
            assert!(is_wcs_key(key), "{key}");
        }
        for key in ["CRPIX3", "OBJECT", "CDELT", "CD3_1"] {
            assert!(!is_wcs_key(key), "{key}");
        }
    }
}
