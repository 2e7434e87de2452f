//! TIFF output: baseline, uncompressed, mono as one grey channel, colour as interleaved (chunky) RGB,
//! 16-bit unsigned or 32-bit IEEE float samples, with `Software` and `ImageDescription` tags. Encoded
//! in memory, then published atomically.
//!
//! What it does not: compress, tile, write several images, or scale (the caller's [`LinearMap`]).

use std::io::Cursor;
use std::path::Path;

use ::tiff::encoder::colortype::{self, ColorType};
use ::tiff::encoder::{TiffEncoder, TiffValue};
use ::tiff::tags::Tag;
use ndarray::ArrayView3;

use super::{checked_size, interleaved, software, BitDepth, Export, ExportError, LinearMap};

/// Writes `planes` as TIFF: `map` gives 16-bit samples (and normalised floats); without it floats are
/// written as they are.
pub(super) fn write(
    path: &Path,
    planes: ArrayView3<f32>,
    export: &Export,
    map: Option<&LinearMap>,
) -> Result<(), ExportError> {
    let (width, height) = checked_size(path, &planes)?;
    let grey = planes.dim().0 == 1;
    let description = export.describe(map);
    let tiff_error = |source| ExportError::Tiff {
        path: path.to_path_buf(),
        source,
    };
    let mut encoded = Cursor::new(Vec::new());
    let mut encoder = TiffEncoder::new(&mut encoded).map_err(tiff_error)?;
    let mut image = Image {
        encoder: &mut encoder,
        width,
        height,
        description: &description,
    };
    let written = match export.depth {
        BitDepth::Int16 => {
            // Integer samples always come with a map (`Export::scales`); made here if not.
            let map = map.copied().unwrap_or_else(|| LinearMap::of(planes.iter()));
            let samples = interleaved(&planes, |v| map.to_u16(v));
            if grey {
                image.write::<colortype::Gray16>(&samples)
            } else {
                image.write::<colortype::RGB16>(&samples)
            }
        }
        BitDepth::Float32 => {
            let samples = match map {
                Some(map) => interleaved(&planes, |v| map.unit(v) as f32),
                None => interleaved(&planes, |v| v),
            };
            if grey {
                image.write::<colortype::Gray32Float>(&samples)
            } else {
                image.write::<colortype::RGB32Float>(&samples)
            }
        }
    };
    written.map_err(tiff_error)?;
    crate::atomic::write_bytes(path, encoded.get_ref())?;
    Ok(())
}

/// One image directory of a TIFF being encoded.
struct Image<'a, 'w> {
    encoder: &'a mut TiffEncoder<&'w mut Cursor<Vec<u8>>>,
    width: u32,
    height: u32,
    description: &'a str,
}

impl Image<'_, '_> {
    /// Writes the tags and the samples (`C`: grey or RGB, 16-bit or float).
    fn write<C: ColorType>(&mut self, samples: &[C::Inner]) -> ::tiff::TiffResult<()>
    where
        [C::Inner]: TiffValue,
    {
        let mut image = self.encoder.new_image::<C>(self.width, self.height)?;
        image
            .encoder()
            .write_tag(Tag::Software, software().as_str())?;
        image
            .encoder()
            .write_tag(Tag::ImageDescription, self.description)?;
        image.write_data(samples)
    }
}
