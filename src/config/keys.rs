//! # The table of known keys: what tlr reads, what tile_compile has that tlr ignores, and typo hints
//!
//! What it does: one static table per section lists every key a configuration may hold: the keys tlr
//! reads (leaves), the sections below, and the keys of a user's `tile_compile.yaml` that tlr does not use
//! (each with an optional reason shown in its warning); [`known_keys`] lists the keys tlr reads; an
//! unknown key gets a message with a "did you mean" suggestion (a near sibling first, then the same name
//! in another section, by edit distance) or else the list of keys its section accepts.
//!
//! What it does not do: read YAML or convert values (`walk.rs` walks the tree against this table), or
//! hold defaults (`schema.rs`).

/// What a key of the table is.
pub(super) enum Spec {
    /// A section with known children.
    Section(&'static [(&'static str, Spec)]),
    /// A value tlr reads.
    Leaf,
    /// A key (or whole section) tile_compile knows but tlr does not use; the text is an optional reason.
    Unused(&'static str),
}

use Spec::{Leaf, Section, Unused};

const NO_REASON: &str = "";

pub(super) const ROOT: &[(&str, Spec)] = &[
    ("v4", Section(V4)),
    ("registration", Section(REGISTRATION)),
    ("tile", Section(TILE)),
    // Top-level sections and keys of tile_compile.yaml (Python v4 and C++ versions) that tlr does not use.
    ("schema_version", Unused(NO_REASON)),
    (
        "run_dir",
        Unused("tlr takes its output path on the command line"),
    ),
    (
        "log_level",
        Unused("tlr takes its verbosity on the command line"),
    ),
    ("pipeline", Unused(NO_REASON)),
    (
        "input",
        Unused("tlr takes its input folder on the command line"),
    ),
    (
        "output",
        Unused("tlr takes its output path on the command line"),
    ),
    ("data", Section(DATA)),
    ("linearity", Unused(NO_REASON)),
    ("calibration", Section(super::calibration::KEYS)),
    ("assumptions", Unused(NO_REASON)),
    (
        "normalization",
        Unused("tlr always normalises each frame by its robust background"),
    ),
    ("wiener_denoise", Unused(NO_REASON)),
    ("global_metrics", Unused(NO_REASON)),
    ("local_metrics", Unused(NO_REASON)),
    ("synthetic", Unused(NO_REASON)),
    ("reconstruction", Unused(NO_REASON)),
    ("debayer", Unused(NO_REASON)),
    ("stacking", Unused(NO_REASON)),
    ("validation", Unused(NO_REASON)),
    ("runtime_limits", Unused(NO_REASON)),
];

const DATA: &[(&str, Spec)] = &[
    ("color_mode", Leaf),
    ("bayer_pattern", Leaf),
    (
        "image_width",
        Unused("tlr reads image size and frame count from the frames"),
    ),
    (
        "image_height",
        Unused("tlr reads image size and frame count from the frames"),
    ),
    (
        "frames_min",
        Unused("tlr reads image size and frame count from the frames"),
    ),
    (
        "frames_target",
        Unused("tlr reads image size and frame count from the frames"),
    ),
    ("linear_required", Unused("tlr expects linear frames")),
];

const V4: &[(&str, Spec)] = &[
    ("parallel_tiles", Leaf),
    ("iterations", Leaf),
    ("beta", Leaf),
    ("min_valid_tile_fraction", Leaf),
    ("convergence", Section(CONVERGENCE)),
    ("adaptive_tiles", Section(ADAPTIVE_TILES)),
    ("memory_limits", Section(MEMORY_LIMITS)),
    ("diagnostics", Section(DIAGNOSTICS)),
    ("debug_tile_registration", Unused(NO_REASON)),
];

const CONVERGENCE: &[(&str, Spec)] = &[("enabled", Leaf), ("epsilon_rel", Leaf)];

const ADAPTIVE_TILES: &[(&str, Spec)] = &[
    ("enabled", Leaf),
    ("max_refine_passes", Leaf),
    ("refine_variance_threshold", Leaf),
    ("min_tile_size_px", Leaf),
    ("use_warp_probe", Unused(NO_REASON)),
    ("use_hierarchical", Unused(NO_REASON)),
    ("initial_tile_size", Unused(NO_REASON)),
    ("probe_window", Unused(NO_REASON)),
    ("num_probe_frames", Unused(NO_REASON)),
    ("gradient_sensitivity", Unused(NO_REASON)),
    ("split_gradient_threshold", Unused(NO_REASON)),
    ("hierarchical_max_depth", Unused(NO_REASON)),
];

const MEMORY_LIMITS: &[(&str, Spec)] = &[("rss_warn_mb", Leaf), ("rss_abort_mb", Leaf)];

const DIAGNOSTICS: &[(&str, Spec)] = &[
    ("enabled", Leaf),
    ("warp_field", Leaf),
    ("tile_invalid_map", Leaf),
    ("warp_variance_hist", Leaf),
];

const REGISTRATION: &[(&str, Spec)] = &[
    ("local_tiles", Section(LOCAL_TILES)),
    ("reference_frame", Leaf),
    ("unweighted_geometry", Leaf),
    ("global", Section(GLOBAL)),
    ("mode", Unused("tlr always registers tile-locally")),
    ("enabled", Unused("tlr always registers tile-locally")),
    (
        "engine",
        Unused("tlr registers tiles by cross-correlation and ECC refinement"),
    ),
    (
        "allow_rotation",
        Unused("it belongs to tile_compile's global registration"),
    ),
    ("min_score", Unused(NO_REASON)),
    ("fallback_to_identity", Unused(NO_REASON)),
    ("star_topk", Unused(NO_REASON)),
    ("star_min_inliers", Unused(NO_REASON)),
    ("star_inlier_tol_px", Unused(NO_REASON)),
    ("star_dist_bin_px", Unused(NO_REASON)),
];

const GLOBAL: &[(&str, Spec)] = &[("method", Leaf), ("keep_best_percent", Leaf)];

const LOCAL_TILES: &[(&str, Spec)] = &[
    ("ecc_cc_min", Leaf),
    ("min_valid_frames", Leaf),
    ("max_warp_delta_px", Leaf),
    ("temporal_smoothing_window", Leaf),
    ("variance_window_sigma", Leaf),
    ("allow_rotation", Leaf),
    ("smoothing", Leaf),
    ("rejection_kappa", Leaf),
    ("keep_best_percent", Leaf),
];

const TILE: &[(&str, Spec)] = &[
    ("size_factor", Leaf),
    ("min_size", Leaf),
    ("max_size", Leaf),
    ("overlap_fraction", Leaf),
    ("margin_px", Leaf),
    (
        "max_divisor",
        Unused("tlr bounds the tile size by `tile.max_size`"),
    ),
    ("star_min_count", Unused(NO_REASON)),
];

pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn collect_used(table: &[(&str, Spec)], prefix: &str, out: &mut Vec<String>) {
    for (name, spec) in table {
        match spec {
            Section(children) => collect_used(children, &join(prefix, name), out),
            Leaf => out.push(join(prefix, name)),
            Unused(_) => {}
        }
    }
}

/// Every key path tlr uses, in table order (e.g. `v4.iterations`, `tile.margin_px`).
pub fn known_keys() -> Vec<String> {
    let mut out = Vec::new();
    collect_used(ROOT, "", &mut out);
    out
}

pub(super) fn unknown_key_message(name: &str, prefix: &str, table: &[(&str, Spec)]) -> String {
    let path = join(prefix, name);
    let needle = name.to_ascii_lowercase();
    // 1. A near sibling (typo at the right place).
    let best = table
        .iter()
        .map(|(n, _)| (edit_distance(&needle, &n.to_ascii_lowercase()), *n))
        .min_by_key(|(d, _)| *d);
    if let Some((d, n)) = best {
        if d <= typo_budget(name) {
            return format!("unknown key `{path}`, did you mean `{}`?", join(prefix, n));
        }
    }
    // 2. The same (or a near) key elsewhere in the table (right name, wrong section).
    let mut used = Vec::new();
    collect_used(ROOT, "", &mut used);
    let elsewhere = used
        .iter()
        .map(|full| {
            let last = full.rsplit('.').next().unwrap_or(full);
            (edit_distance(&needle, &last.to_ascii_lowercase()), full)
        })
        .min_by_key(|(d, _)| *d);
    if let Some((d, full)) = elsewhere {
        if d <= typo_budget(name) {
            return format!("unknown key `{path}`, did you mean `{full}`?");
        }
    }
    // 3. No good guess: list what this section accepts.
    let names: Vec<String> = table
        .iter()
        .filter(|(_, s)| !matches!(s, Unused(_)))
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    let place = if prefix.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in `{prefix}`")
    };
    format!(
        "unknown key `{path}`; tlr knows {place}: {}",
        names.join(", ")
    )
}

/// How many edits a name may be away from a known key to count as a typo of it.
fn typo_budget(name: &str) -> usize {
    (name.chars().count() / 4).clamp(1, 3)
}

/// Optimal-string-alignment distance: Levenshtein plus transposition of two neighbouring characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[n][m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_typos() {
        assert_eq!(edit_distance("iterations", "iterations"), 0);
        assert_eq!(edit_distance("iteratons", "iterations"), 1);
        assert_eq!(edit_distance("itreations", "iterations"), 1); // transposition
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("beta", "bteaa"), 2);
    }

    #[test]
    fn suggestions_prefer_siblings_then_other_sections() {
        let m = unknown_key_message("iteratons", "v4", V4);
        assert_eq!(
            m,
            "unknown key `v4.iteratons`, did you mean `v4.iterations`?"
        );
        let m = unknown_key_message("ecc_cc_min", "v4", V4);
        assert_eq!(
            m,
            "unknown key `v4.ecc_cc_min`, did you mean `registration.local_tiles.ecc_cc_min`?"
        );
        let m = unknown_key_message("zzzzzzzz", "tile", TILE);
        assert!(m.contains("tlr knows in `tile`"), "{m}");
        assert!(m.contains("`margin_px`"), "{m}");
        assert!(
            !m.contains("max_divisor"),
            "unused keys are not advertised: {m}"
        );
    }
}
