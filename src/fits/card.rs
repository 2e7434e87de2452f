//! Header cards: one 80-byte card parsed into a [`HeaderCard`] (key, value with FITS string quoting
//! undone, comment), `CONTINUE` cards merged into the long string they continue, and the lookups
//! the rest of the module uses on a parsed header (first value of a key, integers, logicals,
//! numbers, trimmed strings).
//!
//! What it does not: no file access and no structure: which cards a header has, where it ends and
//! what its keywords mean for the image is [`super::header`]'s business; the raw `BSCALE`/`BZERO`/
//! `BLANK` cards are read byte by byte in [`super::scaling`], not through these lookups.

use std::path::Path;

use super::FitsError;

/// Size of one header card in bytes.
pub(super) const CARD: usize = 80;

/// One raw header card of the image HDU, as [`read_header_cards`](super::read_header_cards)
/// returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCard {
    /// Keyword, trimmed (e.g. `DATE-OBS`, `HISTORY`).
    pub key: String,
    /// Value text for `KEY = value` cards: strings unquoted and trimmed, others as written; `None`
    /// for commentary cards.
    pub value: Option<String>,
    /// Comment after `/`, or the text of a commentary card, trimmed.
    pub comment: String,
}

pub(super) fn card_value(cards: &[HeaderCard], key: &str) -> Option<String> {
    cards
        .iter()
        .find(|c| c.key == key && c.value.is_some())
        .and_then(|c| c.value.clone())
}

/// Parses a quoted FITS string starting after its opening quote: `''` is an escaped quote; trailing
/// blanks are not significant. Returns the value and the text after the closing quote.
fn parse_quoted(stripped: &str) -> (String, String) {
    let mut value = String::new();
    let mut chars = stripped.chars().peekable();
    let mut after = String::new();
    while let Some(ch) = chars.next() {
        if ch == '\'' {
            if chars.peek() == Some(&'\'') {
                chars.next();
                value.push('\'');
            } else {
                after = chars.collect();
                break;
            }
        } else {
            value.push(ch);
        }
    }
    (value.trim_end().to_string(), after)
}

fn comment_of(after: &str) -> String {
    after
        .split_once('/')
        .map(|(_, c)| c.trim().to_string())
        .unwrap_or_default()
}

/// Parses one 80-byte card.
pub(super) fn parse_card(raw: &[u8]) -> HeaderCard {
    let text = String::from_utf8_lossy(raw);
    let text: &str = &text;
    let key = text
        .get(..8.min(text.len()))
        .unwrap_or("")
        .trim()
        .to_string();
    let rest = text.get(8..).unwrap_or("");
    if key == "CONTINUE" {
        // Long-string continuation: `CONTINUE  'more text&' / comment`.
        if let Some(stripped) = rest.trim_start().strip_prefix('\'') {
            let (value, after) = parse_quoted(stripped);
            return HeaderCard {
                key,
                value: Some(value),
                comment: comment_of(&after),
            };
        }
    }
    if !rest.starts_with("= ") || key == "HISTORY" || key == "COMMENT" || key.is_empty() {
        return HeaderCard {
            key,
            value: None,
            comment: rest.trim().to_string(),
        };
    }
    let body = rest[2..].trim_start();
    if let Some(stripped) = body.strip_prefix('\'') {
        let (value, after) = parse_quoted(stripped);
        HeaderCard {
            key,
            value: Some(value),
            comment: comment_of(&after),
        }
    } else {
        let (value, comment) = match body.split_once('/') {
            Some((v, c)) => (v.trim(), c.trim()),
            None => (body.trim(), ""),
        };
        HeaderCard {
            key,
            value: Some(value.to_string()),
            comment: comment.to_string(),
        }
    }
}

/// Appends a card, merging `CONTINUE` cards into a preceding string ending with `&` (the OGIP
/// long-string convention).
pub(super) fn push_card(cards: &mut Vec<HeaderCard>, card: HeaderCard) {
    if card.key == "CONTINUE" {
        if let (Some(prev), Some(more)) = (cards.last_mut(), card.value.as_deref()) {
            if let Some(head) = prev.value.as_deref().and_then(|v| v.strip_suffix('&')) {
                prev.value = Some(format!("{head}{more}"));
                if !card.comment.is_empty() {
                    prev.comment = card.comment;
                }
                return;
            }
        }
    }
    cards.push(card);
}

pub(super) fn parse_int(
    path: &Path,
    hdu: usize,
    cards: &[HeaderCard],
    key: &str,
) -> Result<Option<i64>, FitsError> {
    match card_value(cards, key) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| FitsError::BadKeyword {
                path: path.to_path_buf(),
                hdu,
                key: key.to_string(),
                reason: format!("`{v}` is not an integer"),
            }),
    }
}

pub(super) fn require_int(
    path: &Path,
    hdu: usize,
    cards: &[HeaderCard],
    key: &str,
) -> Result<i64, FitsError> {
    parse_int(path, hdu, cards, key)?.ok_or_else(|| FitsError::BadKeyword {
        path: path.to_path_buf(),
        hdu,
        key: key.to_string(),
        reason: "missing".to_string(),
    })
}

pub(super) fn is_true(cards: &[HeaderCard], key: &str) -> bool {
    card_value(cards, key).is_some_and(|v| v.trim() == "T")
}

pub(super) fn clean_string(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Numeric keyword value; accepts numbers written as quoted strings and Fortran `D` exponents.
pub(super) fn number(cards: &[HeaderCard], key: &str) -> Option<f64> {
    let v = card_value(cards, key)?;
    let v = v.trim().replace(['D', 'd'], "E");
    v.parse::<f64>().ok().filter(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cards() {
        let mut raw = format!("{:<80}", "DATE-OBS= '2018-09-07T22:31:45.431' / UTC start");
        let c = parse_card(raw.as_bytes());
        assert_eq!(c.key, "DATE-OBS");
        assert_eq!(c.value.as_deref(), Some("2018-09-07T22:31:45.431"));
        assert_eq!(c.comment, "UTC start");
        raw = format!("{:<80}", "OBJECT  = 'O''Neil  '");
        assert_eq!(parse_card(raw.as_bytes()).value.as_deref(), Some("O'Neil"));
        raw = format!("{:<80}", "EXPTIME = 060.00 / Exposure");
        assert_eq!(parse_card(raw.as_bytes()).value.as_deref(), Some("060.00"));
        raw = format!("{:<80}", "HISTORY = not a value");
        assert_eq!(parse_card(raw.as_bytes()).value, None);
    }
}
