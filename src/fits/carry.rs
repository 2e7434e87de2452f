//! The frames' header cards a result carries over: the observation's keywords (`OBJECT`, `TELESCOP`,
//! `INSTRUME`, `FILTER`, optics, sensor, site, pointing: [`CARRIED_KEYS`]), the time span as ISO 8601
//! UTC (`DATE-OBS` of the first start, `DATE-END` of the last end, whatever zone the frames wrote) and
//! the reference frame's WCS. A key whose value differs between the frames combined is summarised
//! (`CCD-TEMP`: the mean; the pointing keys: the reference frame's value, whose grid the result has)
//! or dropped, and a HISTORY line says which.
//!
//! What it does not: read files (the header walk keeps each frame's [`carried_cards`] in its
//! [`super::FrameHeader`]), write them, or decide which frames were combined or which is the reference.

use super::calendar::{format_utc, parse_date_obs};
use super::card::{card_value, number};
use super::wcs::{is_wcs_key, PixelMap, Wcs};
use super::{Card, CardValue, FrameHeader, HeaderCard};

/// The observation keywords a result carries from its frames, in the order they are written.
pub const CARRIED_KEYS: &[&str] = &[
    "OBJECT", "TELESCOP", "INSTRUME", "FILTER", "FOCALLEN", "XPIXSZ", "YPIXSZ", "PIXSIZE1",
    "PIXSIZE2", "XBINNING", "YBINNING", "GAIN", "OFFSET", "CCD-TEMP", "SITELAT", "SITELONG", "RA",
    "DEC", "OBJCTRA", "OBJCTDEC",
];
/// Keys whose value is text even when it looks like a number.
const TEXT_KEYS: &[&str] = &[
    "OBJECT", "TELESCOP", "INSTRUME", "FILTER", "OBJCTRA", "OBJCTDEC",
];
/// Keys summarised by their mean when the frames differ.
const MEAN_KEYS: &[&str] = &["CCD-TEMP"];
/// Keys that follow the reference frame when the frames differ: the result has its grid.
const POINTING_KEYS: &[&str] = &["RA", "DEC", "OBJCTRA", "OBJCTDEC"];

/// The cards of a header that a result may carry: [`CARRIED_KEYS`], `DATE-END` and the WCS cards.
/// Kept per frame by the header walk (a few dozen cards at most).
pub fn carried_cards(cards: &[HeaderCard]) -> Vec<HeaderCard> {
    cards
        .iter()
        .filter(|c| {
            c.value.is_some()
                && (CARRIED_KEYS.contains(&c.key.as_str())
                    || c.key == "DATE-END"
                    || is_wcs_key(&c.key))
        })
        .cloned()
        .collect()
}

/// What a result's header takes from its frames: cards in order, the HISTORY lines that say what was
/// summarised or dropped, and the reference frame's WCS.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StackHeader {
    /// [`CARRIED_KEYS`] found (the same in every frame, or summarised), then `DATE-OBS`, `DATE-END`.
    pub cards: Vec<Card>,
    /// One line per key summarised or dropped, and per WCS that could not be carried.
    pub history: Vec<String>,
    /// The reference frame's WCS (in its pixels), when it has a valid one.
    pub wcs: Option<Wcs>,
}

impl StackHeader {
    /// The header of a stack of `frames` (the frames combined, in time order) on the grid of
    /// `reference` (the frame whose pixels the result's grid is defined by; it need not be combined).
    pub fn from_frames(frames: &[&FrameHeader], reference: Option<&FrameHeader>) -> StackHeader {
        let mut out = StackHeader::default();
        if frames.is_empty() {
            return out;
        }
        for &key in CARRIED_KEYS {
            carry_key(key, frames, reference, &mut out);
        }
        carry_dates(frames, &mut out);
        if let Some(reference) = reference {
            let name = reference.path.file_name().map_or_else(String::new, |n| {
                n.to_string_lossy()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_graphic() || c == ' ' {
                            c
                        } else {
                            '?'
                        }
                    })
                    .collect()
            });
            // The name on a line of its own: a long line is wrapped over two cards, which would
            // split the name.
            out.history
                .push("geometry measured against the pixel grid of the reference frame:".into());
            out.history.push(name);
            match Wcs::from_cards(&reference.carried) {
                Ok(wcs) => out.wcs = wcs,
                Err(reason) => out
                    .history
                    .push(format!("WCS of the reference frame not carried: {reason}")),
            }
        }
        out
    }

    /// The WCS cards for an image whose pixels `map` sends to the reference frame's, with a HISTORY
    /// line when SIP distortion could not be kept; nothing when there is no WCS.
    pub fn wcs_cards(&self, map: &PixelMap) -> (Vec<Card>, Option<String>) {
        let Some((wcs, kept_sip)) = self.wcs.as_ref().and_then(|w| w.moved(map)) else {
            return (Vec::new(), None);
        };
        let note = (!kept_sip).then(|| {
            "SIP distortion of the reference frame's WCS dropped: the grid is rotated or stretched against it"
                .to_string()
        });
        (wcs.cards(), note)
    }
}

/// A value as a card: text keys and non-numbers as strings, integers as integers, else floats.
/// `None` for text that a FITS card cannot hold (not printable ASCII).
fn card_value_of(key: &str, text: &str) -> Option<CardValue> {
    if !text.bytes().all(|b| (32..127).contains(&b)) {
        return None;
    }
    if !TEXT_KEYS.contains(&key) {
        if let Ok(i) = text.parse::<i64>() {
            return Some(CardValue::Int(i));
        }
        if let Ok(x) = text.replace(['D', 'd'], "E").parse::<f64>() {
            if x.is_finite() {
                return Some(CardValue::Float(x));
            }
        }
    }
    Some(CardValue::Str(text.to_string()))
}

fn same_value(key: &str, a: &str, b: &str) -> bool {
    let parse = |t: &str| t.replace(['D', 'd'], "E").parse::<f64>().ok();
    if !TEXT_KEYS.contains(&key) {
        if let (Some(x), Some(y)) = (parse(a), parse(b)) {
            return x == y;
        }
    }
    a == b
}

fn carry_key(
    key: &str,
    frames: &[&FrameHeader],
    reference: Option<&FrameHeader>,
    out: &mut StackHeader,
) {
    let values: Vec<Option<String>> = frames
        .iter()
        .map(|f| card_value(&f.carried, key).map(|v| v.trim().to_string()))
        .collect();
    let present: Vec<&str> = values.iter().flatten().map(String::as_str).collect();
    let Some(&first) = present.first() else {
        return;
    };
    let comment = frames
        .iter()
        .find_map(|f| f.carried.iter().find(|c| c.key == key))
        .map(|c| c.comment.clone())
        .unwrap_or_default();
    let comment: String = comment
        .bytes()
        .filter(|b| (32..127).contains(b))
        .map(char::from)
        .collect();
    let mut push = |value: CardValue, comment: &str| out.cards.push(Card::new(key, value, comment));
    let n = frames.len();
    if present.len() == n && present.iter().all(|v| same_value(key, first, v)) {
        match card_value_of(key, first) {
            Some(value) => push(value, &comment),
            None => out
                .history
                .push(format!("{key} dropped: not printable ASCII")),
        }
        return;
    }
    let missing = n - present.len();
    let numbers: Vec<f64> = frames
        .iter()
        .filter_map(|f| number(&f.carried, key))
        .collect();
    if MEAN_KEYS.contains(&key) && missing == 0 && numbers.len() == n {
        let mean = numbers.iter().sum::<f64>() / n as f64;
        let (lo, hi) = numbers
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        push(CardValue::Float(mean), &format!("mean of {n} frames"));
        out.history.push(format!(
            "{key} differs between the {n} frames ({lo} to {hi}): their mean is written"
        ));
        return;
    }
    if POINTING_KEYS.contains(&key) {
        if let Some(value) = reference
            .and_then(|r| card_value(&r.carried, key))
            .and_then(|v| card_value_of(key, v.trim()))
        {
            push(value, "of the reference frame (this image's grid)");
            out.history.push(format!(
                "{key} differs between the frames: the reference frame's value is written"
            ));
            return;
        }
    }
    out.history.push(if missing > 0 {
        format!("{key} dropped: missing in {missing} of the {n} frames")
    } else {
        format!("{key} dropped: differs between the {n} frames")
    });
}

/// `DATE-OBS` (the earliest start) and `DATE-END` (the latest end: start + exposure, or the frame's
/// own `DATE-END`, else its start) as ISO 8601 UTC.
fn carry_dates(frames: &[&FrameHeader], out: &mut StackHeader) {
    let mut span: Option<(f64, f64)> = None;
    let mut undated = 0;
    for f in frames {
        let Some(start) = f.date_obs.as_deref().and_then(parse_date_obs) else {
            undated += 1;
            continue;
        };
        let end = match f.exposure_s {
            Some(e) if e.is_finite() && e >= 0.0 => start + e,
            _ => card_value(&f.carried, "DATE-END")
                .as_deref()
                .and_then(parse_date_obs)
                .filter(|&end| end >= start)
                .unwrap_or(start),
        };
        span = Some(span.map_or((start, end), |(a, b)| (a.min(start), b.max(end))));
    }
    let Some((start, end)) = span else {
        return;
    };
    if let (Some(start), Some(end)) = (format_utc(start), format_utc(end)) {
        out.cards.push(Card::new(
            "DATE-OBS",
            CardValue::Str(start),
            "[UTC] start of the first frame combined",
        ));
        out.cards.push(Card::new(
            "DATE-END",
            CardValue::Str(end),
            "[UTC] end of the last frame combined",
        ));
    }
    if undated > 0 {
        out.history.push(format!(
            "DATE-OBS/DATE-END span the {} dated frames; {undated} had no readable DATE-OBS",
            frames.len() - undated
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(cards: &[(&str, &str)], date: Option<&str>, exposure: Option<f64>) -> FrameHeader {
        let cards: Vec<HeaderCard> = cards
            .iter()
            .map(|(k, v)| HeaderCard {
                key: (*k).into(),
                value: Some((*v).into()),
                comment: format!("{k} comment"),
            })
            .collect();
        FrameHeader {
            path: "a.fits".into(),
            hdu: 0,
            rows: 4,
            cols: 4,
            bitpix: 16,
            exposure_s: exposure,
            date_obs: date.map(String::from),
            gain: None,
            offset: None,
            bayer: None,
            row_order: None,
            filter: None,
            object: None,
            ccd_temp: None,
            creator: None,
            saturation: None,
            carried: carried_cards(&cards),
        }
    }

    fn value<'a>(h: &'a StackHeader, key: &str) -> Option<&'a CardValue> {
        h.cards.iter().find(|c| c.key == key).map(|c| &c.value)
    }

    #[test]
    fn equal_values_are_carried_and_differing_ones_summarised_or_dropped() {
        let a = frame(
            &[
                ("OBJECT", "M27"),
                ("GAIN", "180"),
                ("FOCALLEN", "510."),
                ("CCD-TEMP", "-10"),
                ("FILTER", "L"),
                ("RA", "299.9"),
                ("HISTORY", "x"),
            ],
            Some("2017-12-19T18:33:43.317-0700"),
            Some(60.0),
        );
        let b = frame(
            &[
                ("OBJECT", "M27"),
                ("GAIN", "180"),
                ("FOCALLEN", "5.1E2"),
                ("CCD-TEMP", "-11"),
                ("FILTER", "R"),
                ("RA", "300.0"),
            ],
            Some("2017-12-19T18:36:12.000-0700"),
            Some(60.0),
        );
        let c = frame(
            &[
                ("OBJECT", "M27"),
                ("GAIN", "180"),
                ("FOCALLEN", "510"),
                ("CCD-TEMP", "-12"),
                ("RA", "300.1"),
            ],
            Some("2017-12-19T18:39:12.000-0700"),
            Some(60.0),
        );
        let h = StackHeader::from_frames(&[&a, &b, &c], Some(&b));
        assert_eq!(value(&h, "OBJECT"), Some(&CardValue::Str("M27".into())));
        assert_eq!(value(&h, "GAIN"), Some(&CardValue::Int(180)));
        assert_eq!(value(&h, "FOCALLEN"), Some(&CardValue::Float(510.0)));
        assert_eq!(value(&h, "CCD-TEMP"), Some(&CardValue::Float(-11.0)));
        assert_eq!(value(&h, "RA"), Some(&CardValue::Float(300.0)));
        assert_eq!(value(&h, "FILTER"), None);
        assert_eq!(value(&h, "HISTORY"), None);
        assert_eq!(
            value(&h, "DATE-OBS"),
            Some(&CardValue::Str("2017-12-20T01:33:43.317".into()))
        );
        assert_eq!(
            value(&h, "DATE-END"),
            Some(&CardValue::Str("2017-12-20T01:40:12.000".into()))
        );
        let history = h.history.join("\n");
        assert!(
            history.contains("CCD-TEMP differs between the 3 frames (-12 to -10): their mean"),
            "{history}"
        );
        assert!(
            history.contains("FILTER dropped: missing in 1 of the 3 frames"),
            "{history}"
        );
        assert!(
            history.contains("RA differs between the frames: the reference frame's value"),
            "{history}"
        );
        assert_eq!(h.history.len(), 5, "{history}");
        assert!(
            history.contains("pixel grid of the reference frame:"),
            "{history}"
        );
        assert!(h.history.iter().any(|line| line == "a.fits"), "{history}");
        assert!(h.wcs.is_none());
    }

    #[test]
    fn text_that_a_card_cannot_hold_is_dropped_with_a_note() {
        let a = frame(&[("OBJECT", "M31 – Andromeda")], None, None);
        let h = StackHeader::from_frames(&[&a], Some(&a));
        assert!(h.cards.is_empty());
        assert_eq!(h.history[0], "OBJECT dropped: not printable ASCII");
    }

    #[test]
    fn the_reference_frames_wcs_is_taken() {
        let wcs = [
            ("CTYPE1", "RA---TAN"),
            ("CTYPE2", "DEC--TAN"),
            ("CRVAL1", "10"),
            ("CRVAL2", "20"),
            ("CRPIX1", "5"),
            ("CRPIX2", "6"),
            ("CDELT1", "-0.001"),
            ("CDELT2", "0.001"),
        ];
        let mut other = wcs;
        other[4] = ("CRPIX1", "7");
        let (a, b) = (frame(&wcs, None, None), frame(&other, None, None));
        let h = StackHeader::from_frames(&[&b, &a], Some(&a));
        assert_eq!(h.wcs.as_ref().map(|w| w.crpix), Some([5.0, 6.0]));
        let (cards, note) = h.wcs_cards(&PixelMap::IDENTITY.cropped(1.0, 2.0));
        assert!(note.is_none());
        let crpix1 = cards.iter().find(|c| c.key == "CRPIX1").map(|c| &c.value);
        assert_eq!(crpix1, Some(&CardValue::Float(4.0)));
        let none = StackHeader::from_frames(&[&b], None);
        assert!(none.wcs.is_none() && none.wcs_cards(&PixelMap::IDENTITY).0.is_empty());
    }
}
