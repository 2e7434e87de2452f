//! The header walk: with `std::fs` only, and before cfitsio sees the file, it reads the HDUs'
//! header blocks one after the other until the image HDU and checks that the file is a complete
//! FITS file: a regular file, `SIMPLE = T` first, an `END` card in every header, the data every
//! header promises (padded to a whole 2880-byte block), a supported image shape and BITPIX, sane
//! tile sizes and heap descriptors in a tile-compressed table. Its result is a [`Layout`]: which
//! HDU holds the image, its cards and geometry, where its data starts and which backend reads it
//! ([`Storage`]).
//!
//! What it does not: no pixels are read (except a compressed table's descriptors, to check them),
//! and no keyword is interpreted beyond the structural ones: [`super::frame_header`] turns the
//! cards into a [`super::FrameHeader`].

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::card::{card_value, is_true, parse_card, parse_int, push_card, require_int, CARD};
use super::scaling::{check_scaling_cards, plain_scaling, Scaling, RAW_KEYS};
use super::{FitsError, HeaderCard};

/// Size of one FITS block (header or data) in bytes.
const BLOCK: u64 = 2880;
/// Longest header accepted (blocks); protects against scanning garbage forever.
const MAX_HEADER_BLOCKS: u64 = 2000;
/// Most HDUs walked while looking for the image.
const MAX_HDUS: usize = 64;
/// Largest image accepted (pixels): 2^31, i.e. 8 GiB as f32.
const MAX_PIXELS: usize = 1 << 31;

/// The HDU structure found by walking the file's headers.
#[derive(Debug)]
pub(super) struct Layout {
    /// 0-based index of the image HDU.
    pub(super) hdu: usize,
    /// Cards of that HDU's header.
    pub(super) cards: Vec<HeaderCard>,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) bitpix: i64,
    /// NAXIS of the image (2 or 3).
    pub(super) naxis: usize,
    /// `NAXIS3` (1 for a 2-D image).
    pub(super) planes: usize,
    /// Byte offset of the image HDU's data (the block after its `END` card).
    pub(super) data_start: u64,
    /// How the pixels are read: natively (with the scaling to apply) or through cfitsio.
    pub(super) storage: Storage,
}

/// How an image HDU's pixels are stored, i.e. which backend reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Storage {
    /// Plain big-endian samples right at `data_start`, read natively with this scaling.
    Plain(Scaling),
    /// Tile-compressed (a `ZIMAGE` binary table), or an uncompressed image whose structural or
    /// scaling keywords cfitsio might read differently from a plain parse (duplicates, quoted or
    /// malformed numbers, `PCOUNT`/`GCOUNT` other than 0/1): cfitsio reads these, so that they keep
    /// exactly cfitsio's interpretation.
    Cfitsio,
}

/// What a file system entry is when it is not a regular file (`"a directory"`, `"a FIFO (named pipe)"`,
/// ...), for messages; `None` for a regular file. Symbolic links are described as links: pass the
/// type of the followed entry (`fs::metadata`) to describe their target.
pub fn not_a_regular_file(file_type: &fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_symlink() {
        Some("a symbolic link")
    } else {
        Some("not a file")
    }
}

/// One header as [`read_header_at`] returns it.
struct RawHeader {
    cards: Vec<HeaderCard>,
    /// Offset of the first byte after the header (where the HDU's data starts).
    end: u64,
    /// The raw cards whose keyword starts with one of [`RAW_KEYS`], in order.
    raw_keys: Vec<[u8; CARD]>,
    /// Keyword field and value indicator (the first 10 bytes) of the first eight cards.
    first_keys: Vec<[u8; 10]>,
}

/// Reads one header starting at `start`.
fn read_header_at(
    path: &Path,
    file: &mut fs::File,
    start: u64,
    file_len: u64,
    hdu: usize,
) -> Result<RawHeader, FitsError> {
    let io_err = |source| FitsError::Io {
        path: path.to_path_buf(),
        source,
    };
    file.seek(SeekFrom::Start(start)).map_err(io_err)?;
    let mut cards = Vec::new();
    let mut raw_keys = Vec::new();
    let mut first_keys = Vec::new();
    let mut block = vec![0u8; BLOCK as usize];
    let mut offset = start;
    for _ in 0..MAX_HEADER_BLOCKS {
        if offset + BLOCK > file_len {
            if hdu == 0 && cards.is_empty() {
                // Short first block: decide between "not FITS" and "truncated" by the first bytes.
                let mut head = Vec::new();
                file.take(BLOCK).read_to_end(&mut head).map_err(io_err)?;
                check_signature(path, &head)?;
                let found_end = head.chunks(CARD).any(|c| {
                    c.len() >= 3 && &c[..3] == b"END" && c[3..].iter().all(|&b| b == b' ')
                });
                if found_end {
                    return Err(FitsError::HeaderTruncated {
                        path: path.to_path_buf(),
                        hdu,
                        reason: format!(
                            "the file is {} bytes, shorter than one 2880-byte header block",
                            head.len()
                        ),
                    });
                }
            }
            return Err(FitsError::HeaderTruncated {
                path: path.to_path_buf(),
                hdu,
                reason: format!(
                    "the file ends {} bytes into the header, before its END card",
                    file_len.saturating_sub(start)
                ),
            });
        }
        file.read_exact(&mut block).map_err(io_err)?;
        if hdu == 0 && offset == 0 {
            check_signature(path, &block)?;
        }
        offset += BLOCK;
        for raw in block.chunks_exact(CARD) {
            let card = parse_card(raw);
            if card.key == "END" && raw[8..].iter().all(|&b| b == b' ') {
                return Ok(RawHeader {
                    cards,
                    end: offset,
                    raw_keys,
                    first_keys,
                });
            }
            if first_keys.len() < 8 {
                let mut field = [b' '; 10];
                field.copy_from_slice(&raw[..10]);
                first_keys.push(field);
            }
            if RAW_KEYS.iter().any(|k| raw.starts_with(k)) {
                let mut copy = [b' '; CARD];
                copy.copy_from_slice(raw);
                raw_keys.push(copy);
            }
            push_card(&mut cards, card);
        }
    }
    Err(FitsError::NotFits {
        path: path.to_path_buf(),
        reason: format!("HDU {hdu}: no END card within {MAX_HEADER_BLOCKS} header blocks"),
    })
}

fn check_signature(path: &Path, head: &[u8]) -> Result<(), FitsError> {
    if head.len() < 30 || &head[..10] != b"SIMPLE  = " {
        let shown: String = head
            .iter()
            .take(16)
            .map(|&b| {
                if (32..127).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        return Err(FitsError::NotFits {
            path: path.to_path_buf(),
            reason: format!("it does not start with `SIMPLE  =` but with `{shown}`"),
        });
    }
    let value = String::from_utf8_lossy(&head[10..30]);
    if value.trim() != "T" {
        return Err(FitsError::NotFits {
            path: path.to_path_buf(),
            reason: format!("SIMPLE = {} (not a standard FITS file)", value.trim()),
        });
    }
    Ok(())
}

/// Data bytes of an HDU (unpadded): |BITPIX|/8 * GCOUNT * (PCOUNT + NAXIS1*...*NAXISn).
fn data_bytes(path: &Path, hdu: usize, cards: &[HeaderCard]) -> Result<u64, FitsError> {
    let bad = |key: &str, reason: String| FitsError::BadKeyword {
        path: path.to_path_buf(),
        hdu,
        key: key.to_string(),
        reason,
    };
    let bitpix = require_int(path, hdu, cards, "BITPIX")?;
    if ![8, 16, 32, 64, -32, -64].contains(&bitpix) {
        return Err(bad(
            "BITPIX",
            format!("{bitpix} is not a valid FITS BITPIX"),
        ));
    }
    let naxis = require_int(path, hdu, cards, "NAXIS")?;
    if !(0..=999).contains(&naxis) {
        return Err(bad("NAXIS", format!("{naxis} is out of range")));
    }
    if naxis == 0 {
        return Ok(0);
    }
    let mut elements: u64 = 1;
    for i in 1..=naxis {
        let key = format!("NAXIS{i}");
        let n = require_int(path, hdu, cards, &key)?;
        let n = u64::try_from(n).map_err(|_| bad(&key, format!("{n} is negative")))?;
        elements = elements
            .checked_mul(n)
            .ok_or_else(|| bad(&key, "image size overflows".to_string()))?;
    }
    let pcount = parse_int(path, hdu, cards, "PCOUNT")?.unwrap_or(0);
    let gcount = parse_int(path, hdu, cards, "GCOUNT")?.unwrap_or(1);
    let pcount =
        u64::try_from(pcount).map_err(|_| bad("PCOUNT", format!("{pcount} is negative")))?;
    let gcount =
        u64::try_from(gcount).map_err(|_| bad("GCOUNT", format!("{gcount} is negative")))?;
    elements
        .checked_add(pcount)
        .and_then(|e| e.checked_mul(gcount))
        .and_then(|e| e.checked_mul(bitpix.unsigned_abs() / 8))
        .ok_or_else(|| bad("NAXIS", "data size overflows".to_string()))
}

/// Bytes of one element of a binary-table column type (`TFORMn` letter), bits (`X`) counted as bytes
/// of 8; `None` for a letter that is not a FITS type.
fn element_bytes(code: u8) -> Option<u64> {
    match code {
        b'L' | b'X' | b'B' | b'A' => Some(1),
        b'I' => Some(2),
        b'J' | b'E' => Some(4),
        b'K' | b'D' | b'C' | b'P' => Some(8),
        b'M' | b'Q' => Some(16),
        _ => None,
    }
}

/// Checks that every variable-length array of a tile-compressed image's table (columns `rPt` /
/// `rQt`: one (count, offset) descriptor per row) lies inside the heap. cfitsio trusts the
/// descriptors: one of garbage (e.g. blanks, 538 976 288 elements) made it allocate a gigabyte and
/// read past the end of an 8 KB file for seconds (found by the `fits_read` fuzz target).
fn check_heap(
    path: &Path,
    hdu: usize,
    cards: &[HeaderCard],
    file: &mut fs::File,
    data_start: u64,
) -> Result<(), FitsError> {
    let bad = |key: &str, reason: String| FitsError::BadKeyword {
        path: path.to_path_buf(),
        hdu,
        key: key.to_string(),
        reason,
    };
    // data_bytes has checked these are non-negative and that the data is in the file.
    let count = |key: &str| -> Result<u64, FitsError> {
        Ok(parse_int(path, hdu, cards, key)?.unwrap_or(0).max(0) as u64)
    };
    let (row_bytes, rows) = (count("NAXIS1")?, count("NAXIS2")?);
    let (table, pcount) = (row_bytes * rows, count("PCOUNT")?);
    let heap_start = match parse_int(path, hdu, cards, "THEAP")? {
        None => table,
        Some(t) => u64::try_from(t)
            .ok()
            .filter(|&t| t >= table && t <= table + pcount)
            .ok_or_else(|| bad("THEAP", format!("{t} is outside the data")))?,
    };
    let heap_len = table + pcount - heap_start;
    // (byte offset in the row, descriptor type P or Q, bytes per array element) of each array column.
    let mut arrays = Vec::new();
    let mut offset = 0u64;
    for n in 1..=count("TFIELDS")?.min(999) {
        let key = format!("TFORM{n}");
        let form = card_value(cards, &key)
            .ok_or_else(|| bad(&key, "missing".to_string()))?
            .trim()
            .to_ascii_uppercase();
        let digits = form.bytes().take_while(u8::is_ascii_digit).count();
        let repeat = if digits == 0 {
            1
        } else {
            form[..digits]
                .parse::<u64>()
                .map_err(|_| bad(&key, format!("`{form}` has no valid repeat count")))?
        };
        let mut letters = form[digits..].bytes();
        let not_a_type = || bad(&key, format!("`{form}` is not a binary-table column type"));
        let code = letters.next().ok_or_else(not_a_type)?;
        let width = element_bytes(code).ok_or_else(not_a_type)?;
        if matches!(code, b'P' | b'Q') {
            let element = letters
                .next()
                .and_then(element_bytes)
                .ok_or_else(not_a_type)?;
            for k in 0..repeat.min(row_bytes) {
                arrays.push((offset + k * width, code, element));
            }
        }
        let bytes = if code == b'X' {
            repeat.div_ceil(8)
        } else {
            repeat.saturating_mul(width)
        };
        offset = offset.saturating_add(bytes);
    }
    if offset > row_bytes {
        return Err(bad(
            "NAXIS1",
            format!("rows of {row_bytes} bytes, but the TFORMn columns need {offset}"),
        ));
    }
    if arrays.is_empty() {
        return Ok(());
    }
    let mut data = vec![0u8; table as usize];
    file.seek(SeekFrom::Start(data_start))
        .and_then(|_| file.read_exact(&mut data))
        .map_err(|source| FitsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    for (row, bytes) in data.chunks_exact(row_bytes.max(1) as usize).enumerate() {
        for &(at, code, element) in &arrays {
            let at = at as usize;
            // Big-endian signed integers of 4 (P) or 8 (Q) bytes, read into an i64.
            let size = if code == b'P' { 4 } else { 8 };
            let word = |i: usize| {
                let b = &bytes[i..i + size];
                let first = if b[0] & 0x80 != 0 { -1i64 } else { 0 };
                b.iter().fold(first, |v, &x| (v << 8) | i64::from(x))
            };
            let (n, start) = (word(at), word(at + size));
            let end = u64::try_from(n)
                .ok()
                .zip(u64::try_from(start).ok())
                .and_then(|(n, start)| n.checked_mul(element)?.checked_add(start));
            if end.is_none_or(|end| end > heap_len) {
                return Err(FitsError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "HDU {hdu}, table row {}: an array of {n} elements at heap offset {start} \
                         does not fit the {heap_len}-byte heap",
                        row + 1
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Refuses a tile-compressed table whose first eight keywords (`XTENSION` to `TFIELDS`, which
/// cfitsio's `ffgttb` reads in order when it opens the HDU) are not standard keywords with a value
/// (`KEYWORD = `, A-Z 0-9 - _). On a card with an illegal character `ffgttb` stops before it reads `TFIELDS` but may still report
/// success, and `ffbinit` then sizes its column table from an uninitialised count (the `fits_read`
/// fuzz finding `gcount_illegal_keyword_bytes.fits`): cfitsio's error depended on stack garbage, so
/// on how this crate happened to be compiled, and AddressSanitizer reported a crash.
fn check_table_keywords(path: &Path, hdu: usize, first_keys: &[[u8; 10]]) -> Result<(), FitsError> {
    // The FITS standard's keyword field: A-Z 0-9 - _, left-justified, padded with blanks.
    let legal = |field: &[u8; 10]| {
        let key = field[..8].trim_ascii_end();
        &field[8..] == b"= "
            && key
                .iter()
                .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    match first_keys.iter().find(|f| !legal(f)) {
        Some(field) => Err(FitsError::BadKeyword {
            path: path.to_path_buf(),
            hdu,
            key: String::from_utf8_lossy(field[..8].trim_ascii_end()).into_owned(),
            reason: "illegal character in keyword, or no `= ` after it (in the first eight cards \
                     of a binary table)"
                .to_string(),
        }),
        None => Ok(()),
    }
}

/// Geometry of an image HDU.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    bitpix: i64,
    naxis: usize,
    rows: usize,
    cols: usize,
    /// `NAXIS3`, 1 for a 2-D image.
    planes: usize,
}

/// Image geometry of an image HDU. `prefix` is "" or "Z" (compressed). Cubes (`NAXIS = 3`) are
/// accepted here with their plane count; whether a cube is acceptable is the caller's decision
/// ([`FitsReader::open`] refuses them, [`read_cube`] reads them).
///
/// [`FitsReader::open`]: super::FitsReader::open
/// [`read_cube`]: super::read_cube
fn image_geometry(
    path: &Path,
    hdu: usize,
    cards: &[HeaderCard],
    prefix: &str,
) -> Result<Geometry, FitsError> {
    let bad = |key: &str, reason: String| FitsError::BadKeyword {
        path: path.to_path_buf(),
        hdu,
        key: key.to_string(),
        reason,
    };
    let bitpix = require_int(path, hdu, cards, &format!("{prefix}BITPIX"))?;
    if ![8, 16, 32, 64, -32, -64].contains(&bitpix) {
        return Err(FitsError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("BITPIX {bitpix}"),
        });
    }
    let naxis = require_int(path, hdu, cards, &format!("{prefix}NAXIS"))?;
    let mut dims = Vec::new();
    for i in 1..=naxis.clamp(0, 999) {
        if prefix == "Z" {
            // cfitsio divides by the tile size when it opens the HDU: 0 would kill the process
            // (SIGFPE; a fuzz finding), a negative size would misread it.
            // Every card of that name: cfitsio reads the last of repeated cards, this scan the first.
            let key = format!("ZTILE{i}");
            for card in cards.iter().filter(|c| c.key == key) {
                let value = card.value.as_deref().unwrap_or_default().trim();
                if !value.parse::<i64>().is_ok_and(|n| n >= 1) {
                    return Err(bad(
                        &key,
                        format!("`{value}` is not a tile size (at least 1)"),
                    ));
                }
            }
        }
        let key = format!("{prefix}NAXIS{i}");
        let n = require_int(path, hdu, cards, &key)?;
        dims.push(usize::try_from(n).map_err(|_| bad(&key, format!("{n} is negative")))?);
    }
    match dims.as_slice() {
        [cols, rows] | [cols, rows, _] => {
            let planes = dims.get(2).copied().unwrap_or(1);
            if *rows == 0 || *cols == 0 || planes == 0 {
                return Err(FitsError::Unsupported {
                    path: path.to_path_buf(),
                    reason: if planes == 0 {
                        format!("an empty cube of 0 planes of {rows}x{cols}")
                    } else {
                        format!("an empty {rows}x{cols} image")
                    },
                });
            }
            // A tile-compressed header can promise any size; refuse what cannot be a camera frame
            // (or a cube of a few such planes) before anything allocates it.
            if rows.saturating_mul(*cols).saturating_mul(planes) > MAX_PIXELS {
                return Err(FitsError::Unsupported {
                    path: path.to_path_buf(),
                    reason: format!(
                        "a {planes}x{rows}x{cols} image (more than {MAX_PIXELS} pixels)"
                    ),
                });
            }
            Ok(Geometry {
                bitpix,
                naxis: dims.len(),
                rows: *rows,
                cols: *cols,
                planes,
            })
        }
        [n] => Err(FitsError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("a 1-dimensional image of {n} pixels"),
        }),
        other => Err(FitsError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("an image with NAXIS = {} ({:?})", other.len(), other),
        }),
    }
}

/// Walks the file's HDUs with `std::fs` until the image HDU and checks that the file is complete.
pub(super) fn read_layout(path: &Path) -> Result<Layout, FitsError> {
    read_layout_file(path).map(|(layout, _)| layout)
}

/// [`read_layout`], also handing back the open file (the native backend reads its pixels from it).
pub(super) fn read_layout_file(path: &Path) -> Result<(Layout, fs::File), FitsError> {
    let io_err = |source| FitsError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Look before opening: opening a FIFO blocks until a writer appears, a device never ends.
    if let Some(kind) = not_a_regular_file(&fs::metadata(path).map_err(io_err)?.file_type()) {
        return Err(FitsError::NotFits {
            path: path.to_path_buf(),
            reason: format!("it is {kind}, not a regular file"),
        });
    }
    let mut file = fs::File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    let file_len = meta.len();
    if file_len == 0 {
        return Err(FitsError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut start = 0u64;
    for hdu in 0..MAX_HDUS {
        if hdu > 0 && start >= file_len {
            break;
        }
        let RawHeader {
            cards,
            end: data_start,
            raw_keys,
            first_keys,
        } = read_header_at(path, &mut file, start, file_len, hdu)?;
        if hdu > 0 {
            let xt = card_value(&cards, "XTENSION");
            if xt.is_none() {
                // Not an extension header (e.g. trailing garbage after the last HDU): stop looking.
                break;
            }
        }
        let need = data_bytes(path, hdu, &cards)?;
        let have = file_len - data_start;
        let xtension = card_value(&cards, "XTENSION").map(|s| s.trim().to_ascii_uppercase());
        let naxis = parse_int(path, hdu, &cards, "NAXIS")?.unwrap_or(0);
        let plain = || -> Result<Storage, FitsError> {
            check_scaling_cards(path, hdu, &raw_keys)?;
            Ok(plain_scaling(&raw_keys).map_or(Storage::Cfitsio, Storage::Plain))
        };
        let image = match (hdu, xtension.as_deref()) {
            (0, _) if naxis > 0 => {
                if is_true(&cards, "GROUPS") {
                    return Err(FitsError::Unsupported {
                        path: path.to_path_buf(),
                        reason: "random-groups data".to_string(),
                    });
                }
                Some((image_geometry(path, hdu, &cards, "")?, plain()?))
            }
            (_, Some("IMAGE")) if naxis > 0 => {
                Some((image_geometry(path, hdu, &cards, "")?, plain()?))
            }
            (_, Some("BINTABLE")) if is_true(&cards, "ZIMAGE") => {
                check_table_keywords(path, hdu, &first_keys)?;
                Some((image_geometry(path, hdu, &cards, "Z")?, Storage::Cfitsio))
            }
            _ => None,
        };
        let padded = need.div_ceil(BLOCK) * BLOCK;
        if let Some((geometry, storage)) = image {
            if have < need {
                return Err(FitsError::Truncated {
                    path: path.to_path_buf(),
                    have,
                    need,
                });
            }
            if have < padded {
                return Err(FitsError::Unpadded {
                    path: path.to_path_buf(),
                    have,
                    data: need,
                    need: padded,
                });
            }
            if xtension.as_deref() == Some("BINTABLE") {
                check_heap(path, hdu, &cards, &mut file, data_start)?;
            }
            let layout = Layout {
                hdu,
                cards,
                rows: geometry.rows,
                cols: geometry.cols,
                bitpix: geometry.bitpix,
                naxis: geometry.naxis,
                planes: geometry.planes,
                data_start,
                storage,
            };
            return Ok((layout, file));
        }
        if have < padded {
            if have < need {
                return Err(FitsError::Truncated {
                    path: path.to_path_buf(),
                    have,
                    need,
                });
            }
            break; // last HDU without padding and no image in it
        }
        start = data_start + padded;
    }
    Err(FitsError::NoImage {
        path: path.to_path_buf(),
    })
}
