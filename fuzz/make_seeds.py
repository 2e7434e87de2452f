#!/usr/bin/env python3
"""Writes the FITS seed corpus of the fits_header / fits_read fuzz targets into fuzz/seeds/fits/.

Seeds are small (a few KB each):
- real frames given on the command line (FITS files, e.g. /work/shared/data/*/*.fits): their header with
  NAXIS1/NAXIS2 shrunk to 16x16 and the first 16x16 pixels of data (a valid small frame with the real
  cards), plus the untouched header followed by one 2880-byte block of data (a truncated frame);
- synthetic images like the ones the test suite writes: every BITPIX, BSCALE/BZERO (unsigned 16 bit),
  BLANK, NaN, a 3-plane cube, an image in an extension, and tile-compressed (.fz) images (needs astropy).

Usage: python3 fuzz/make_seeds.py [FRAME.fits ...]
"""
import os
import sys

import numpy as np
from astropy.io import fits

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "fits")
BLOCK = 2880


def pad(b, fill=b"\0"):
    return b + fill * (-len(b) % BLOCK)


def header_of(raw):
    """(cards as 80-byte strings, byte length of the header incl. padding)."""
    cards = []
    for i in range(0, len(raw), 80):
        card = raw[i : i + 80]
        cards.append(card)
        if card.startswith(b"END "):
            return cards, len(pad(raw[: i + 80]))
    raise ValueError("no END card")


def shrunk(raw, side=16):
    cards, length = header_of(raw)
    bitpix = 16
    out = []
    for c in cards:
        key = c[:8].strip()
        if key == b"BITPIX":
            bitpix = int(c[10:30])
        if key in (b"NAXIS1", b"NAXIS2"):
            c = c[:10] + f"{side:>20}".encode() + c[30:]
        out.append(c)
    head = pad(b"".join(out), b" ")
    row_bytes = abs(bitpix) // 8
    cols = int([c for c in cards if c.startswith(b"NAXIS1")][0][10:30])
    data = b"".join(raw[length + r * cols * row_bytes : length + (r * cols + side) * row_bytes] for r in range(side))
    return head + pad(data)


def synthetic():
    rng = np.random.default_rng(7)
    img = (rng.random((12, 10)) * 200).astype(np.float64)
    hdus = {}
    for name, dtype in [("u8", np.uint8), ("i16", np.int16), ("i32", np.int32), ("i64", np.int64),
                        ("f32", np.float32), ("f64", np.float64)]:
        hdus[name] = fits.PrimaryHDU(img.astype(dtype))
    u16 = fits.PrimaryHDU((img * 300).astype(np.uint16))  # astropy writes BZERO = 32768
    hdus["u16_bzero"] = u16
    scaled = fits.PrimaryHDU((img * 10).astype(np.int16))
    scaled.header["BSCALE"] = 0.5
    scaled.header["BZERO"] = -3.0
    hdus["i16_bscale"] = scaled
    blank = (img * 10).astype(np.int16)
    blank[2, 3] = -999
    b = fits.PrimaryHDU(blank)
    b.header["BLANK"] = -999
    hdus["i16_blank"] = b
    nan = img.astype(np.float32)
    nan[1, 1] = np.nan
    hdus["f32_nan"] = fits.PrimaryHDU(nan)
    hdus["cube3"] = fits.PrimaryHDU(np.stack([img, img * 2, img * 3]).astype(np.float32))
    bayer = fits.PrimaryHDU((img * 100).astype(np.uint16))
    bayer.header["BAYERPAT"] = "RGGB"
    bayer.header["DATE-OBS"] = "2018-09-07T22:31:45.431"
    hdus["u16_bayer"] = bayer
    for name, hdu in hdus.items():
        hdu.writeto(os.path.join(OUT, name + ".fits"), overwrite=True)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img.astype(np.float32))]).writeto(
        os.path.join(OUT, "extension.fits"), overwrite=True)
    for ctype, dtype in [("RICE_1", np.int16), ("GZIP_1", np.float32), ("GZIP_2", np.int32),
                         ("PLIO_1", np.int16), ("HCOMPRESS_1", np.int16)]:
        square = (rng.random((16, 16)) * 2000).astype(dtype)
        comp = fits.CompImageHDU(square, compression_type=ctype)
        fits.HDUList([fits.PrimaryHDU(), comp]).writeto(
            os.path.join(OUT, f"{ctype.lower()}.fits.fz"), overwrite=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    for path in sys.argv[1:]:
        raw = open(path, "rb").read()
        stem = os.path.splitext(os.path.basename(path))[0]
        with open(os.path.join(OUT, stem + "_16x16.fits"), "wb") as f:
            f.write(shrunk(raw))
        _, length = header_of(raw)
        with open(os.path.join(OUT, stem + "_truncated.fits"), "wb") as f:
            f.write(raw[: length + BLOCK])
    synthetic()


if __name__ == "__main__":
    main()
