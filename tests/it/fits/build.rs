//! Byte-level FITS builder, independent of cfitsio: header cards, header blocks, padded data and
//! whole single-HDU files, for tests that need files no FITS library would write.

/// One header card `KEY     = value`, `value` written as given (quote strings yourself).
pub fn card(key: &str, value: &str) -> String {
    format!("{key:<8}= {value:>20}")
}

/// A header block sequence: the cards, END, blank padding to a multiple of 2880 bytes.
pub fn header(cards: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cards {
        let mut c = c.clone();
        c.truncate(80);
        out.extend_from_slice(format!("{c:<80}").as_bytes());
    }
    out.extend_from_slice(format!("{:<80}", "END").as_bytes());
    while out.len() % 2880 != 0 {
        out.push(b' ');
    }
    out
}

/// Pads data to a multiple of 2880 bytes with zeros.
pub fn pad(mut data: Vec<u8>) -> Vec<u8> {
    while data.len() % 2880 != 0 {
        data.push(0);
    }
    data
}

/// A complete single-HDU file: `dims` in FITS order (NAXIS1 = columns first), raw big-endian data.
pub fn primary(bitpix: i64, dims: &[usize], extra: &[String], data: Vec<u8>) -> Vec<u8> {
    let mut cards = vec![
        card("SIMPLE", "T"),
        card("BITPIX", &bitpix.to_string()),
        card("NAXIS", &dims.len().to_string()),
    ];
    for (i, d) in dims.iter().enumerate() {
        cards.push(card(&format!("NAXIS{}", i + 1), &d.to_string()));
    }
    cards.extend_from_slice(extra);
    let mut out = header(&cards);
    out.extend(pad(data));
    out
}

/// Big-endian bytes of i16 values.
pub fn be_i16(v: &[i16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

/// Big-endian bytes of f32 values.
pub fn be_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

/// A `rows x cols` u16-camera-style frame (BITPIX 16, BZERO 32768) with `extra` cards; pixel values
/// are `base + 7*r + c`.
pub fn camera_frame(rows: usize, cols: usize, base: u16, extra: &[String]) -> Vec<u8> {
    let raw: Vec<i16> = (0..rows * cols)
        .map(|i| {
            let v = base as i32 + 7 * (i / cols) as i32 + (i % cols) as i32;
            (v.clamp(0, 65535) - 32768) as i16
        })
        .collect();
    let mut cards = vec![card("BZERO", "32768"), card("BSCALE", "1")];
    cards.extend_from_slice(extra);
    primary(16, &[cols, rows], &cards, be_i16(&raw))
}
