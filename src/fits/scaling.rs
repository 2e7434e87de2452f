//! `BSCALE`, `BZERO` and `BLANK` of an uncompressed image, read from the raw cards exactly as
//! cfitsio reads them, and the decision that follows: a plain parse that is sure to agree with
//! cfitsio gives a [`Scaling`] for the native backend; anything unusual (a repeated keyword, a
//! quoted or malformed number, a value `strtod` reports as out of range, `PCOUNT`/`GCOUNT` other
//! than 0/1) sends the image to cfitsio. Scaling cards that are not finite numbers at all are
//! refused with a clear error.
//!
//! What it does not: no file access (the header walk hands over the raw cards) and no pixel
//! conversion (that is [`super::native`]'s `Conversion`).

use std::path::Path;

use super::card::CARD;
use super::FitsError;

/// `BSCALE`, `BZERO` and `BLANK` of an uncompressed image, as cfitsio's `ffgphd` reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Scaling {
    pub(super) bscale: f64,
    pub(super) bzero: f64,
    /// Raw value of undefined integer pixels; `None` without a `BLANK` card (or with cfitsio's own
    /// "undefined" marker value 1234554321).
    pub(super) blank: Option<i64>,
}

/// Keywords whose raw cards the header walk's `read_header_at` keeps for [`plain_scaling`]
/// (prefixes of the 8-byte keyword field; `NAXIS` covers `NAXISn`).
pub(super) const RAW_KEYS: &[&[u8]] = &[
    b"BSCALE", b"BZERO", b"BLANK", b"PCOUNT", b"GCOUNT", b"BITPIX", b"NAXIS",
];

/// cfitsio's marker for "no null value defined" (`NULL_UNDEFINED` in fitsio2.h): a `BLANK` with this
/// value disables its null check.
const CFITSIO_NULL_UNDEFINED: i64 = 1_234_554_321;

/// The value text of a raw `KEY     = value / comment` card when it is a plain (unquoted) value;
/// `None` for anything else (no `= ` value indicator, quoted string, non-ASCII).
fn raw_value(raw: &[u8]) -> Option<&str> {
    if raw.len() < 10 || &raw[8..10] != b"= " {
        return None;
    }
    let text = std::str::from_utf8(&raw[10..]).ok()?;
    if text.contains('\'') {
        return None;
    }
    let value = text.split_once('/').map_or(text, |(v, _)| v);
    Some(value.trim_matches(' '))
}

/// A number in the form both Rust's parser and C's `strtod` (as cfitsio's `ffc2dd` calls it) read
/// the same: `[+-]digits[.digits][(E|e|D)[+-]digits]`. `None` for anything else, and for values
/// `strtod` reports as out of range (overflow, underflow to 0, subnormal): cfitsio then ignores the
/// keyword, which only cfitsio itself should decide.
fn plain_float(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let mantissa_start = i;
    let mut n = digits(&mut i);
    if i < b.len() && b[i] == b'.' {
        i += 1;
        n += digits(&mut i);
    }
    if n == 0 {
        return None;
    }
    let mantissa_nonzero = b[mantissa_start..i]
        .iter()
        .any(|c| (b'1'..=b'9').contains(c));
    if i < b.len() && matches!(b[i], b'E' | b'e' | b'D') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    let v: f64 = text.replace('D', "E").parse().ok()?;
    let out_of_range = !v.is_finite() || v.is_subnormal() || (v == 0.0 && mantissa_nonzero);
    (!out_of_range).then_some(v)
}

/// An integer `[+-]digits` within `i64` (what `strtoll` reads without error).
fn plain_int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Refuses `BSCALE`/`BZERO` cards whose value is not a finite number (a quoted string, nothing, `abc`,
/// hex, `1E400`). cfitsio reads such a card as 1.0 (or 0.0) without a word, which scales every pixel
/// wrongly and silently; a frame with one is an error naming the file and the keyword instead.
pub(super) fn check_scaling_cards(
    path: &Path,
    hdu: usize,
    raw_cards: &[[u8; CARD]],
) -> Result<(), FitsError> {
    for raw in raw_cards {
        let key = raw[..8].trim_ascii_end();
        if key != b"BSCALE" && key != b"BZERO" || &raw[8..10] != b"= " {
            continue;
        }
        let text = String::from_utf8_lossy(&raw[10..]);
        let text = text.trim_start();
        let value = if text.starts_with('\'') {
            None
        } else {
            let number = text.split('/').next().unwrap_or_default().trim();
            number
                .replace(['D', 'd'], "E")
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
        };
        if value.is_none() {
            return Err(FitsError::BadKeyword {
                path: path.to_path_buf(),
                hdu,
                key: String::from_utf8_lossy(key).into_owned(),
                reason: format!("`{}` is not a finite number", text.trim_end()),
            });
        }
    }
    Ok(())
}

/// The scaling of an uncompressed image from its raw structural cards, when a plain parse is sure to
/// read them as cfitsio does: each keyword at most once, plain numbers, `PCOUNT` 0 and `GCOUNT` 1
/// when present. `None` sends the image to the cfitsio backend.
pub(super) fn plain_scaling(raw_cards: &[[u8; CARD]]) -> Option<Scaling> {
    let mut seen: Vec<&[u8]> = Vec::new();
    let mut scaling = Scaling {
        bscale: 1.0,
        bzero: 0.0,
        blank: None,
    };
    for raw in raw_cards {
        let key = raw[..8].trim_ascii_end();
        if seen.contains(&key) {
            return None;
        }
        seen.push(key);
        match key {
            b"BSCALE" => scaling.bscale = plain_float(raw_value(raw)?)?,
            b"BZERO" => scaling.bzero = plain_float(raw_value(raw)?)?,
            b"BLANK" => {
                let blank = plain_int(raw_value(raw)?)?;
                scaling.blank = (blank != CFITSIO_NULL_UNDEFINED).then_some(blank);
            }
            b"PCOUNT" if plain_int(raw_value(raw)?)? != 0 => return None,
            b"GCOUNT" if plain_int(raw_value(raw)?)? != 1 => return None,
            b"PCOUNT" | b"GCOUNT" | b"BITPIX" | b"NAXIS" => {}
            k if k.len() > 5
                && k.starts_with(b"NAXIS")
                && k[5..].iter().all(u8::is_ascii_digit) => {}
            // Another keyword sharing a prefix (e.g. `BLANKS`): cfitsio ignores it, and so do we.
            _ => {}
        }
    }
    Some(scaling)
}
