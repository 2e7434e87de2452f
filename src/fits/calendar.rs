//! `DATE-OBS` values as times: [`parse_date_obs`] turns the date forms capture programs write (ISO
//! 8601 with or without a zone, the old `DD/MM/YY`) into seconds since 1970-01-01 UTC, with a
//! proleptic Gregorian calendar, so that frames can be ordered and spaced in time; [`format_utc`]
//! writes such a time back as ISO 8601 UTC (`2017-12-20T01:33:43.317`), as a result's header gives it.
//!
//! What it does not: no time scales (TAI, TT: a time without a zone is taken as UTC), no leap
//! seconds, no `MJD-OBS`/`JD` keywords, and no completion of a date-only value with `TIME-OBS` (the
//! header's job, see [`super::FrameHeader::date_obs`]).

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic Gregorian date.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `(year, month, day)` of a day count since 1970-01-01 (the inverse of
/// `days_from_civil`, Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Seconds since 1970-01-01T00:00:00 UTC as ISO 8601 UTC with milliseconds and no zone suffix
/// (`2017-12-20T01:33:43.317`), the form FITS uses for `DATE-OBS`/`DATE-END` (a time without a zone
/// is UTC). `None` for a time that is not finite or outside the years 0-9999.
pub fn format_utc(seconds: f64) -> Option<String> {
    if !seconds.is_finite() {
        return None;
    }
    let millis = (seconds * 1000.0).round();
    if millis.abs() > 4e14 {
        return None;
    }
    let millis = millis as i64;
    let (days, ms_of_day) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
    let (mi, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}"
    ))
}

/// Parses a `DATE-OBS` value to seconds since 1970-01-01T00:00:00 UTC.
///
/// Accepted: `YYYY-MM-DD`, `YYYY-MM-DDThh:mm[:ss[.fff]]` (a space instead of `T` too) with an
/// optional zone suffix `Z`, `±hh`, `±hhmm` or `±hh:mm` (MicroObservatory writes local time with
/// `-0700`), and the old FITS form `DD/MM/YY` (19YY). Without a zone the time is taken as UTC.
/// Returns `None` for anything else, or for out-of-range fields.
pub fn parse_date_obs(text: &str) -> Option<f64> {
    let s = text.trim();
    if let Some((d, rest)) = s.split_once('/') {
        // Old FITS form DD/MM/YY.
        let (m, y) = rest.split_once('/')?;
        let (d, m, y): (i64, i64, i64) = (d.parse().ok()?, m.parse().ok()?, y.trim().parse().ok()?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(0..=99).contains(&y) {
            return None;
        }
        return Some(days_from_civil(1900 + y, m, d) as f64 * 86_400.0);
    }
    let (date, time) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], Some(s[i + 1..].trim())),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut seconds = days_from_civil(y, m, d) as f64 * 86_400.0;
    if let Some(time) = time.filter(|t| !t.is_empty()) {
        // Split off a zone suffix.
        let (clock, zone) = if let Some(c) = time.strip_suffix('Z') {
            (c, 0.0)
        } else if let Some(i) = time.rfind(['+', '-']) {
            let z = &time[i + 1..];
            let digits: String = z.chars().filter(|c| *c != ':').collect();
            if digits.is_empty()
                || !digits.chars().all(|c| c.is_ascii_digit())
                || !(digits.len() == 2 || digits.len() == 4)
            {
                return None;
            }
            let hh: f64 = digits[..2].parse().ok()?;
            let mm: f64 = if digits.len() == 4 {
                digits[2..].parse().ok()?
            } else {
                0.0
            };
            let sign = if time.as_bytes()[i] == b'-' {
                -1.0
            } else {
                1.0
            };
            (&time[..i], sign * (hh * 3600.0 + mm * 60.0))
        } else {
            (time, 0.0)
        };
        let mut f = clock.split(':');
        let h: f64 = f.next()?.parse().ok()?;
        let mi: f64 = f.next()?.parse().ok()?;
        let sec: f64 = match f.next() {
            Some(x) => x.parse().ok()?,
            None => 0.0,
        };
        if f.next().is_some()
            || !(0.0..24.0).contains(&h)
            || !(0.0..60.0).contains(&mi)
            || !(0.0..61.0).contains(&sec)
        {
            return None;
        }
        // Local time = UTC + zone, so UTC = local - zone.
        seconds += h * 3600.0 + mi * 60.0 + sec - zone;
    }
    Some(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dates() {
        let utc = parse_date_obs("2017-12-20T01:33:43.317").unwrap();
        let local = parse_date_obs("2017-12-19T18:33:43.317-0700").unwrap();
        assert!((utc - local).abs() < 1e-6, "{utc} vs {local}");
        assert_eq!(parse_date_obs("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_date_obs("1970-01-02"), Some(86_400.0));
        assert_eq!(parse_date_obs("1970-01-01T01:00:00+01:00"), Some(0.0));
        assert_eq!(parse_date_obs("02/01/70"), Some(86_400.0));
        assert_eq!(parse_date_obs("yesterday"), None);
        assert_eq!(parse_date_obs("2020-13-01"), None);
        assert_eq!(parse_date_obs("2020-01-01T25:00:00"), None);
    }

    #[test]
    fn formats_utc() {
        let local = parse_date_obs("2017-12-19T18:33:43.317-0700").unwrap();
        assert_eq!(
            format_utc(local).as_deref(),
            Some("2017-12-20T01:33:43.317")
        );
        assert_eq!(format_utc(0.0).as_deref(), Some("1970-01-01T00:00:00.000"));
        assert_eq!(format_utc(-0.5).as_deref(), Some("1969-12-31T23:59:59.500"));
        assert_eq!(
            format_utc(951_782_400.0).as_deref(),
            Some("2000-02-29T00:00:00.000")
        );
        assert_eq!(format_utc(f64::NAN), None);
        for text in [
            "2024-02-29T23:59:59.999",
            "1999-12-31T00:00:00.000",
            "2100-03-01T12:00:00.250",
        ] {
            assert_eq!(
                format_utc(parse_date_obs(text).unwrap()).as_deref(),
                Some(text)
            );
        }
    }
}
