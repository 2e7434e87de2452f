//! PNG output: 16-bit grey (mono) or RGB (colour), the image mapped onto 0..65535 by the caller's
//! [`LinearMap`], with `tEXt` chunks `Software` and `Description` (the scaling). Encoded in memory with
//! fast deflate and one fixed row filter, then published atomically.
//!
//! What it does not: 8-bit or float PNG, stretch for display (the preview in [`crate::preview`] does),
//! or interlace.

use std::path::Path;

use ndarray::ArrayView3;

use super::{checked_size, interleaved, software, Export, ExportError, LinearMap};

/// Writes `planes` as a 16-bit PNG with `map`'s scaling.
pub(super) fn write(
    path: &Path,
    planes: ArrayView3<f32>,
    export: &Export,
    map: &LinearMap,
) -> Result<(), ExportError> {
    let (width, height) = checked_size(path, &planes)?;
    let colour = if planes.dim().0 == 1 {
        ::png::ColorType::Grayscale
    } else {
        ::png::ColorType::Rgb
    };
    // PNG stores 16-bit samples big-endian.
    let bytes: Vec<u8> = interleaved(&planes, |v| map.to_u16(v).to_be_bytes())
        .into_iter()
        .flatten()
        .collect();
    let png_error = |source| ExportError::Png {
        path: path.to_path_buf(),
        source,
    };
    let mut encoded = Vec::new();
    let mut info = ::png::Info::with_size(width, height);
    info.color_type = colour;
    info.bit_depth = ::png::BitDepth::Sixteen;
    let mut encoder = ::png::Encoder::with_info(&mut encoded, info).map_err(png_error)?;
    encoder.set_compression(::png::Compression::Fast);
    // Up: 16-bit rows of a smooth sky are alike from one row to the next; the adaptive default tries
    // every filter on every row, several times slower.
    encoder.set_filter(::png::Filter::Up);
    encoder
        .add_text_chunk("Software".into(), software())
        .and_then(|()| encoder.add_text_chunk("Description".into(), export.describe(Some(map))))
        .map_err(png_error)?;
    encoder
        .write_header()
        .and_then(|mut writer| {
            writer.write_image_data(&bytes)?;
            writer.finish()
        })
        .map_err(png_error)?;
    crate::atomic::write_bytes(path, &encoded)?;
    Ok(())
}
