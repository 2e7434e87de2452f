//! The header of a result: provenance, the stack's figures (`NCOMBINE`, `STACKCNT`, `LIVETIME`,
//! `EXPTIME`; `SATURATE` and `TLRNSAT` when the frames saturate), the cards carried from the frames ([`crate::batch::RunOutput::header`]), and the
//! helpers that make FITS cards.
//!
//! What it does not: write files (the writers in [`super::image`] and [`super::diagnostics`] do).

use tlr_core::fits::{self, Card, CardValue, OutputMeta};

use crate::batch::RunOutput;

/// Pixels sampled (on a regular grid) for the `DATAMED`/`DATASIG` header figures.
const IMAGE_STAT_SAMPLES: usize = 1 << 18;

/// The header of a result: provenance and the figures a user expects.
pub fn output_meta(run: &RunOutput, kind: &str) -> OutputMeta {
    let s = &run.summary;
    let mut cards = vec![
        card_str(
            "CREATOR",
            &format!(
                "{} {} {kind}",
                fits::CREATOR_PREFIX,
                env!("CARGO_PKG_VERSION")
            ),
            "software that wrote this file",
        ),
        card_int(
            "NCOMBINE",
            s.frames_used as i64,
            "number of frames combined",
        ),
        card_int("STACKCNT", s.frames_used as i64, "number of frames stacked"),
        card_int("TLRTILES", s.tiles_total as i64, "tiles in the grid"),
        card_int("TLRVALID", s.tiles_valid as i64, "tiles reconstructed"),
        card_int("TLRTSIZE", s.tile_size_px as i64, "[px] tile size"),
        card_float(
            "TLRFWHM",
            f64::from(s.median_fwhm_px),
            "[px] median FWHM of input frames",
        ),
        card_str(
            "TLRMODE",
            match s.registration {
                crate::settings::Registration::TileLocal => "tile-local",
                crate::settings::Registration::GlobalOnly => "global",
            },
            "registration mode",
        ),
    ];
    // Frames without stars (Sun, Moon, planets) have no FWHM: no card rather than a NaN.
    if !s.median_fwhm_px.is_finite() {
        cards.retain(|c| c.key != "TLRFWHM");
    }
    if let Some(exposure) = s.exposure_total_s {
        cards.insert(
            3,
            card_float("LIVETIME", exposure, "[s] exposure of the frames stacked"),
        );
        cards.push(card_float(
            "EXPTIME",
            exposure,
            "[s] total exposure of combined frames",
        ));
    }
    // Carried from the frames (observation keywords, DATE-OBS/DATE-END as ISO 8601 UTC).
    cards.extend(run.header.cards.iter().cloned());
    // A sampled estimate (as for every background in tlr): a full sigma-clipped pass over the image
    // cost 30-60 ms per file written, serially at the end of a run.
    if let Some(stats) = tlr_core::stats::background_and_noise(run.image.view(), IMAGE_STAT_SAMPLES)
    {
        cards.push(card_float(
            "DATAMED",
            f64::from(stats.median),
            "median of the image (clipped, sampled)",
        ));
        cards.push(card_float(
            "DATASIG",
            f64::from(stats.sigma),
            "robust sigma of the image (sampled)",
        ));
    }
    let saturation = run.saturation.as_ref().and_then(|sat| {
        let level = sat.level()?;
        cards.push(card_float(
            "SATURATE",
            f64::from(level),
            "saturation level of the stack (ADU)",
        ));
        cards.push(card_int(
            "TLRNSAT",
            sat.pixels as i64,
            "pixels held at the saturation level",
        ));
        let levels: Vec<String> = sat
            .levels
            .iter()
            .map(|l| l.map_or_else(|| "none".to_string(), |l| format!("{l}")))
            .collect();
        Some(format!(
            "saturation: level per plane {} (frames' SATURATE/DATAMAX or pile-up of the maximum, \
             times their scale, lowest over frames); {} pixels held at it",
            levels.join(" "),
            sat.pixels
        ))
    });
    OutputMeta {
        cards,
        history: vec![
            format!(
                "tlr {} tile-local registration and reconstruction (methodology v4 phase 6)",
                env!("CARGO_PKG_VERSION")
            ),
            format!("config sha256 {}", s.config_digest),
            format!(
                "{} of {} frames used, {} of {} tiles valid",
                s.frames_used, s.frames_total, s.tiles_valid, s.tiles_total
            ),
        ]
        .into_iter()
        .chain(run.header.history.iter().cloned())
        .chain(saturation)
        .collect(),
    }
}

pub(crate) fn card_str(key: &str, value: &str, comment: &str) -> Card {
    Card {
        key: key.into(),
        value: CardValue::Str(value.into()),
        comment: comment.into(),
    }
}

pub(crate) fn card_int(key: &str, value: i64, comment: &str) -> Card {
    Card {
        key: key.into(),
        value: CardValue::Int(value),
        comment: comment.into(),
    }
}

pub(crate) fn card_float(key: &str, value: f64, comment: &str) -> Card {
    Card {
        key: key.into(),
        value: CardValue::Float(value),
        comment: comment.into(),
    }
}
