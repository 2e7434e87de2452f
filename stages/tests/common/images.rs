//! Exported TIFF and PNG files read back with the `tiff` and `png` crates' decoders, and the export
//! rule written out independently of tlr's code (0 at min(0, minimum), white at the maximum, linear),
//! for the export tests of both packages (`tests/it/export.rs` includes this file by path).
//! What it does not: assert anything about tlr.
#![allow(dead_code)] // each test binary uses its own subset

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use ndarray::ArrayView3;

/// Samples of a decoded file, in file order (rows top to bottom, R G B per pixel).
#[derive(Debug)]
pub enum Samples {
    /// 16-bit unsigned.
    U16(Vec<u16>),
    /// 32-bit float.
    F32(Vec<f32>),
}

impl Samples {
    /// The 16-bit samples (a failure for floats).
    pub fn u16(&self) -> &[u16] {
        match self {
            Samples::U16(s) => s,
            Samples::F32(_) => panic!("float samples where 16-bit were expected"),
        }
    }

    /// The float samples (a failure for integers).
    pub fn f32(&self) -> &[f32] {
        match self {
            Samples::F32(s) => s,
            Samples::U16(_) => panic!("16-bit samples where floats were expected"),
        }
    }
}

/// A decoded picture.
#[derive(Debug)]
pub struct Decoded {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// The samples.
    pub samples: Samples,
    /// TIFF `Software`/`ImageDescription` tags, PNG `tEXt` chunks: (keyword, text).
    pub texts: Vec<(String, String)>,
}

impl Decoded {
    /// The text stored under `keyword` (empty when there is none).
    pub fn text(&self, keyword: &str) -> String {
        self.texts
            .iter()
            .find(|(k, _)| k == keyword)
            .map(|(_, t)| t.clone())
            .unwrap_or_default()
    }
}

/// Decodes a TIFF file.
pub fn read_tiff(path: &Path) -> Decoded {
    let file = BufReader::new(File::open(path).expect("open the TIFF"));
    let mut decoder = tiff::decoder::Decoder::new(file).expect("a TIFF file");
    let (width, height) = decoder.dimensions().expect("dimensions");
    let channels = match decoder.colortype().expect("colour type") {
        tiff::ColorType::Gray(_) => 1,
        tiff::ColorType::RGB(_) => 3,
        other => panic!("unexpected TIFF colour type {other:?}"),
    };
    let mut texts = Vec::new();
    for (keyword, tag) in [
        ("Software", tiff::tags::Tag::Software),
        ("Description", tiff::tags::Tag::ImageDescription),
    ] {
        if let Ok(text) = decoder.get_tag_ascii_string(tag) {
            texts.push((keyword.to_string(), text));
        }
    }
    let samples = match decoder.read_image().expect("TIFF samples") {
        tiff::decoder::DecodingResult::U16(s) => Samples::U16(s),
        tiff::decoder::DecodingResult::F32(s) => Samples::F32(s),
        _ => panic!("neither 16-bit nor float samples"),
    };
    Decoded {
        width,
        height,
        channels,
        samples,
        texts,
    }
}

/// Decodes a 16-bit PNG file (a failure for other depths).
pub fn read_png(path: &Path) -> Decoded {
    let file = BufReader::new(File::open(path).expect("open the PNG"));
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().expect("a PNG file");
    let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
    let frame = reader.next_frame(&mut buf).expect("PNG samples");
    assert_eq!(frame.bit_depth, png::BitDepth::Sixteen, "not a 16-bit PNG");
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let samples = buf[..frame.buffer_size()]
        .chunks_exact(2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .collect();
    let texts = reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    Decoded {
        width: frame.width,
        height: frame.height,
        channels,
        samples: Samples::U16(samples),
        texts,
    }
}

/// The samples of `(planes, rows, cols)` in file order: rows top to bottom, pixels left to right,
/// R G B per pixel.
pub fn pixel_order(a: &ArrayView3<f32>) -> Vec<f32> {
    let (planes, rows, cols) = a.dim();
    let mut out = Vec::with_capacity(planes * rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            for p in 0..planes {
                out.push(a[[p, r, c]]);
            }
        }
    }
    out
}

/// The export rule on `a`, in file order: `(v - black) / (white - black)` with black = min(0,
/// minimum), white = maximum; `None` for NaN.
pub fn rule_unit(a: &ArrayView3<f32>) -> Vec<Option<f64>> {
    let finite = a.iter().copied().filter(|v| v.is_finite());
    let black = f64::from(finite.clone().fold(0.0f32, f32::min));
    let white = f64::from(finite.fold(f32::MIN, f32::max));
    pixel_order(a)
        .into_iter()
        .map(|v| (!v.is_nan()).then(|| (f64::from(v) - black) / (white - black)))
        .collect()
}

/// The export rule's 16-bit samples of `a` (NaN as 0), in file order.
pub fn rule_u16(a: &ArrayView3<f32>) -> Vec<u16> {
    rule_unit(a)
        .into_iter()
        .map(|u| u.map_or(0, |u| (u * 65535.0).round() as u16))
        .collect()
}
