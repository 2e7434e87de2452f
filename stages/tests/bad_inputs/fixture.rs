//! The corpus's good frames (simulated once per test binary) and a raw FITS writer to damage them
//! with: any BITPIX, any cards (quoted, repeated, missing END), any pixels.
//!
//! What it does not: validate what it writes; writing broken files is its purpose.

use super::*;

/// The good frames: their pixels and DATE-OBS, and a folder holding them as simulated.
pub(crate) struct Fixture {
    _root: tempfile::TempDir,
    pub(crate) good: PathBuf,
    pub(crate) frames: Vec<(String, Array2<f32>)>,
}

pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let good = root.path().join("good");
        let mut cfg = SimConfig::new(Scenario::Seeing, FRAMES, SIZE, SIZE, 3);
        cfg.star_density_per_mpx = 12_000.0;
        cfg.bad_frames = false;
        simulate::write_sequence(&cfg, &good).expect("the simulator writes the good frames");
        for extra in [
            simulate::TRUTH_FILE,
            simulate::TRUTH_DISPLACEMENT_FILE,
            simulate::CONFIG_FILE,
        ] {
            let _ = fs::remove_file(good.join(extra));
        }
        let frames = good_frames(&good)
            .iter()
            .map(|p| {
                let (h, image) = tlr_core::fits::read_image(p).unwrap();
                (h.date_obs.unwrap_or_default(), image)
            })
            .collect();
        Fixture {
            _root: root,
            good,
            frames,
        }
    })
}

pub(crate) fn good_frames(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some(OsStr::new("fits")))
        .collect();
    paths.sort();
    paths
}

/// Copies the first `n` good frames into `dir/frames`.
pub(crate) fn copy_good(dir: &Path, n: usize) -> PathBuf {
    let frames = dir.join("frames");
    fs::create_dir_all(&frames).unwrap();
    for p in good_frames(&fixture().good).iter().take(n) {
        fs::copy(p, frames.join(p.file_name().unwrap())).unwrap();
    }
    frames
}

/// One 80-character header card.
pub(crate) fn card(key: &str, value: &str) -> String {
    let text = if value.is_empty() {
        key.to_string()
    } else {
        format!("{key:<8}= {value:>20}")
    };
    format!("{text:<80}")
}

/// Cards and data bytes as a FITS HDU: header padded with blanks, data with zeros, to 2880 bytes.
pub(crate) fn hdu(cards: &[String], end: bool, data: &[u8]) -> Vec<u8> {
    let mut bytes: Vec<u8> = cards.concat().into_bytes();
    if end {
        bytes.extend(format!("{:<80}", "END").bytes());
    }
    bytes.resize(bytes.len().div_ceil(2880) * 2880, b' ');
    let start = bytes.len();
    bytes.extend_from_slice(data);
    bytes.resize(start + data.len().div_ceil(2880) * 2880, 0);
    bytes
}

/// The header cards of an image: SIMPLE, BITPIX, NAXISn, then `extra` (key, raw value).
pub(crate) fn image_cards(bitpix: i32, axes: &[usize], extra: &[(&str, String)]) -> Vec<String> {
    let mut cards = vec![card("SIMPLE", "T"), card("BITPIX", &bitpix.to_string())];
    cards.push(card("NAXIS", &axes.len().to_string()));
    for (i, n) in axes.iter().enumerate() {
        cards.push(card(&format!("NAXIS{}", i + 1), &n.to_string()));
    }
    cards.extend(extra.iter().map(|(k, v)| card(k, v)));
    cards
}

/// Pixels stored as `bitpix` (big-endian), physical value = BZERO + BSCALE * stored.
pub(crate) fn encode(pixels: &[f32], bitpix: i32, bzero: f64, bscale: f64) -> Vec<u8> {
    let stored = pixels.iter().map(|&v| (f64::from(v) - bzero) / bscale);
    match bitpix {
        8 => stored.map(|s| s.round().clamp(0.0, 255.0) as u8).collect(),
        16 => stored
            .flat_map(|s| (s.round().clamp(-32768.0, 32767.0) as i16).to_be_bytes())
            .collect(),
        32 => stored
            .flat_map(|s| (s.round() as i32).to_be_bytes())
            .collect(),
        64 => stored
            .flat_map(|s| (s.round() as i64).to_be_bytes())
            .collect(),
        -32 => stored.flat_map(|s| (s as f32).to_be_bytes()).collect(),
        -64 => stored.flat_map(|s| s.to_be_bytes()).collect(),
        other => panic!("no encoding for BITPIX {other}"),
    }
}

/// A quoted FITS string value.
pub(crate) fn quoted(s: &str) -> String {
    format!("'{s:<8}'")
}

/// Writes frame `i` of the fixture with `bitpix` (BZERO/BSCALE chosen to hold the values) and
/// `extra` cards.
pub(crate) fn write_frame(path: &Path, i: usize, bitpix: i32, extra: &[(&str, String)]) {
    write_pixels(path, i, bitpix, extra, |_| {});
}

/// [`write_frame`], with `edit` changing the pixels (or the shape) first.
pub(crate) fn write_pixels(
    path: &Path,
    i: usize,
    bitpix: i32,
    extra: &[(&str, String)],
    edit: impl FnOnce(&mut Array2<f32>),
) {
    let (date, image) = &fixture().frames[i];
    let mut image = image.clone();
    edit(&mut image);
    let pixels: Vec<f32> = image.iter().copied().collect();
    let (bzero, bscale) = match bitpix {
        8 => {
            // An 8-bit camera: the sky and faint stars resolved, bright stars saturate at 255.
            let mut sorted: Vec<f32> = pixels.iter().copied().filter(|v| v.is_finite()).collect();
            sorted.sort_by(f32::total_cmp);
            let (lo, hi) = (
                sorted[sorted.len() / 100],
                sorted[sorted.len() * 998 / 1000],
            );
            (f64::from(lo), f64::from((hi - lo).max(1.0)) / 255.0)
        }
        16 => (32768.0, 1.0),
        _ => (0.0, 1.0),
    };
    let mut cards = vec![("DATE-OBS", quoted(date)), ("EXPTIME", "10.0".into())];
    if bitpix > 0 {
        cards.push(("BZERO", format!("{bzero:.10E}")));
        cards.push(("BSCALE", format!("{bscale:.10E}")));
    }
    // A key of `extra` replaces ours: no repeated cards (readers differ on which one counts).
    cards.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    cards.extend(extra.iter().cloned());
    let (rows, cols) = image.dim();
    let data = encode(&pixels, bitpix, bzero, bscale);
    fs::write(
        path,
        hdu(&image_cards(bitpix, &[cols, rows], &cards), true, &data),
    )
    .unwrap();
}

/// Writes all good frames into `dir/frames` as `bitpix`.
pub(crate) fn frames_as(dir: &Path, bitpix: i32) -> PathBuf {
    let frames = dir.join("frames");
    fs::create_dir_all(&frames).unwrap();
    for i in 0..FRAMES {
        write_frame(&frames.join(format!("f{i:02}.fits")), i, bitpix, &[]);
    }
    frames
}
