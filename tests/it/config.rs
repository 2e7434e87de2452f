//! Configuration: defaults, ranges, unknown and unused keys, all problems at once, the parallel_tiles rules,
//! every shipped YAML file, digest and round trip.

use std::path::{Path, PathBuf};

use tlr_core::config::{
    known_keys, load, parse, parse_with_cores, Config, ConfigError, LoadedConfig, Smoothing,
};

/// Parses with an injected core count and returns the problems (panics with the config if it parsed).
fn problems(text: &str, cores: usize) -> Vec<String> {
    match parse_with_cores(text, "test.yaml", cores) {
        Ok(loaded) => panic!("expected problems for\n{text}\ngot {loaded:?}"),
        Err(ConfigError::Invalid {
            source_name,
            problems,
        }) => {
            assert_eq!(source_name, "test.yaml");
            problems
        }
        Err(other) => panic!("expected Invalid for\n{text}\ngot {other}"),
    }
}

fn ok(text: &str, cores: usize) -> LoadedConfig {
    match parse_with_cores(text, "test.yaml", cores) {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected\n{text}\nto parse, got {e}"),
    }
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

#[test]
fn defaults_are_the_published_ones() {
    let c = Config::default();
    assert_eq!(c.v4.parallel_tiles, None);
    assert_eq!(c.v4.iterations, 3);
    assert_eq!(c.v4.beta, 5.0);
    assert_eq!(c.v4.min_valid_tile_fraction, 0.3);
    assert!(c.v4.convergence.enabled);
    assert_eq!(c.v4.convergence.epsilon_rel, 1e-3);
    assert!(!c.v4.adaptive_tiles.enabled);
    assert_eq!(c.v4.adaptive_tiles.max_refine_passes, 2);
    assert_eq!(c.v4.adaptive_tiles.refine_variance_threshold, 0.25);
    assert_eq!(c.v4.adaptive_tiles.min_tile_size_px, 64);
    assert_eq!(c.v4.memory_limits.rss_warn_mb, 4096);
    assert_eq!(c.v4.memory_limits.rss_abort_mb, 8192);
    let d = &c.v4.diagnostics;
    assert!(d.enabled && d.warp_field && d.tile_invalid_map && d.warp_variance_hist);
    let lt = &c.registration.local_tiles;
    assert_eq!(lt.ecc_cc_min, 0.2);
    assert_eq!(lt.min_valid_frames, 10);
    assert_eq!(lt.max_warp_delta_px, 2.0);
    assert_eq!(lt.temporal_smoothing_window, 11);
    assert_eq!(lt.variance_window_sigma, 2.0);
    assert!(!lt.allow_rotation);
    assert_eq!(lt.smoothing, Smoothing::Savgol);
    assert_eq!(lt.rejection_kappa, 3.0);
    assert_eq!(c.tile.size_factor, 32.0);
    assert_eq!(c.tile.min_size, 64);
    assert_eq!(c.tile.max_size, 256);
    assert_eq!(c.tile.overlap_fraction, 0.25);
    assert_eq!(c.tile.margin_px, 16);
    assert_eq!(c.validate(1), Ok(()));

    // An empty file, a file of comments and empty sections all give the defaults, without warnings.
    for text in [
        "",
        "# nothing\n",
        "v4:\nregistration:\n  local_tiles:\ntile:\n",
        "{}",
    ] {
        let loaded = ok(text, 4);
        assert_eq!(loaded.config, Config::default(), "{text:?}");
        assert!(
            loaded.warnings.is_empty(),
            "{text:?}: {:?}",
            loaded.warnings
        );
    }
}

#[test]
fn default_yaml_is_the_builtin_default_and_documents_every_key() {
    let path = config_dir().join("default.yaml");
    let loaded =
        parse_with_cores(&std::fs::read_to_string(&path).unwrap(), "default.yaml", 1).unwrap();
    assert_eq!(loaded.config, Config::default());
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

    // Every key tlr knows is spelled out, and every key line has a comment above it naming its default.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let (key, rest) = trimmed.split_once(':').expect("key: value lines only");
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).chain([key]).collect();
        let path = path.join(".");
        let value = rest.split('#').next().unwrap().trim();
        if value.is_empty() {
            stack.push((indent, key.to_string()));
            continue;
        }
        let mut comment = String::new();
        for above in lines[..i].iter().rev() {
            match above.trim_start().strip_prefix('#') {
                Some(c) => comment.push_str(c),
                None => break,
            }
        }
        assert!(
            comment.contains("Default"),
            "`{path}` has no comment naming its default"
        );
        found.push(path);
    }
    assert_eq!(found, known_keys());
}

#[test]
fn every_shipped_config_file_loads() {
    let mut files = Vec::new();
    for dir in [config_dir(), config_dir().join("examples")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for path in &files {
        // Loading validates (ranges, parallel_tiles against this machine); the calibration section
        // must also be usable as shipped: nothing switched on without its folder or master, and
        // every file it switches on must be shipped too.
        let loaded = load(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.config.validate(1), Ok(()), "{}", path.display());
        let cal = &loaded.config.calibration;
        assert_eq!(
            cal.setting_problems(),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
        for (on, use_master, dir, master) in [
            (
                cal.use_bias,
                cal.bias_use_master,
                &cal.bias_dir,
                &cal.bias_master,
            ),
            (
                cal.use_dark,
                cal.dark_use_master,
                &cal.darks_dir,
                &cal.dark_master,
            ),
            (
                cal.use_flat,
                cal.flat_use_master,
                &cal.flats_dir,
                &cal.flat_master,
            ),
        ] {
            let needed = if use_master { master } else { dir };
            if let (true, Some(p)) = (on, needed) {
                panic!(
                    "{}: calibration needs `{}`, which is not shipped",
                    path.display(),
                    p.display()
                );
            }
        }
        // Only the tile_compile example may carry ignored keys.
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with("tile_compile") {
            assert!(!loaded.warnings.is_empty());
        } else {
            assert!(loaded.warnings.is_empty(), "{name}: {:?}", loaded.warnings);
        }
    }

    let tc = load(&config_dir().join("examples/tile_compile_v4.yaml")).unwrap();
    assert_eq!(tc.config.v4.iterations, 4);
    assert_eq!(tc.config.registration.local_tiles.min_valid_frames, 12);
    let w = &tc.warnings;
    assert!(
        w.contains(&"`stacking.method` is not used by tlr and is ignored".to_string()),
        "{w:#?}"
    );
    // tile_compile's calibration keys are read, with their meanings (the masters it names are left
    // off, so that the file runs as shipped).
    let cal = &tc.config.calibration;
    assert!(cal.dark_use_master && cal.flat_use_master);
    assert!(!cal.use_dark && !cal.use_flat && !cal.use_bias);
    assert_eq!(
        cal.dark_master.as_deref(),
        Some(Path::new("masters/dark_30s_-10C.fits"))
    );
    assert!(w
        .iter()
        .any(|m| m.starts_with("`v4.adaptive_tiles.use_warp_probe` is not used")));
    assert!(w
        .iter()
        .any(|m| m.starts_with("`tile.max_divisor` is not used")));
    assert!(w
        .iter()
        .any(|m| m.starts_with("`global_metrics.clamp` is not used")));
    assert!(w.iter().any(|m| m.starts_with("`debayer` is not used")));
}

#[test]
fn each_range_violation_is_reported_with_its_key_path() {
    let cases: &[(&str, &str)] = &[
        ("v4: {iterations: 0}", "`v4.iterations` must be between 1 and 10, got 0"),
        ("v4: {iterations: 11}", "`v4.iterations` must be between 1 and 10, got 11"),
        ("v4: {beta: -1}", "`v4.beta` must be between 0 and 20, got -1"),
        ("v4: {beta: 20.5}", "`v4.beta` must be between 0 and 20, got 20.5"),
        ("v4: {min_valid_tile_fraction: 1.5}", "`v4.min_valid_tile_fraction` must be between 0 and 1"),
        ("v4: {convergence: {epsilon_rel: 0.5}}", "`v4.convergence.epsilon_rel` must be between"),
        ("v4: {convergence: {epsilon_rel: 1.0e-9}}", "`v4.convergence.epsilon_rel` must be between"),
        ("v4: {adaptive_tiles: {max_refine_passes: 6}}", "`v4.adaptive_tiles.max_refine_passes`"),
        ("v4: {adaptive_tiles: {refine_variance_threshold: 0}}", "`v4.adaptive_tiles.refine_variance_threshold` must be greater than 0"),
        ("v4: {adaptive_tiles: {min_tile_size_px: 16}}", "`v4.adaptive_tiles.min_tile_size_px` must be between 32 and 512"),
        ("v4: {memory_limits: {rss_warn_mb: 100}}", "`v4.memory_limits.rss_warn_mb` must be at least 512"),
        ("v4: {memory_limits: {rss_abort_mb: 2000, rss_warn_mb: 3000}}", "`v4.memory_limits.rss_warn_mb` (3000) must not exceed `v4.memory_limits.rss_abort_mb` (2000)"),
        ("v4: {memory_limits: {rss_abort_mb: 600, rss_warn_mb: 512}}", "`v4.memory_limits.rss_abort_mb` must be at least 1024"),
        ("registration: {local_tiles: {ecc_cc_min: 1.2}}", "`registration.local_tiles.ecc_cc_min` must be between 0 and 1"),
        ("registration: {local_tiles: {min_valid_frames: 0}}", "`registration.local_tiles.min_valid_frames` must be at least 1"),
        ("registration: {local_tiles: {max_warp_delta_px: 0}}", "`registration.local_tiles.max_warp_delta_px` must be greater than 0"),
        ("registration: {local_tiles: {max_warp_delta_px: 11}}", "`registration.local_tiles.max_warp_delta_px`"),
        ("registration: {local_tiles: {temporal_smoothing_window: 10}}", "`registration.local_tiles.temporal_smoothing_window` must be odd"),
        ("registration: {local_tiles: {temporal_smoothing_window: 1}}", "`registration.local_tiles.temporal_smoothing_window` must be an odd number between 3 and 51"),
        ("registration: {local_tiles: {variance_window_sigma: 0.1}}", "`registration.local_tiles.variance_window_sigma` must be between 0.5 and 10"),
        ("registration: {local_tiles: {rejection_kappa: 0.5}}", "`registration.local_tiles.rejection_kappa` must be between 1 and 10"),
        ("tile: {size_factor: 0.5}", "`tile.size_factor` must be between 1 and 256"),
        ("tile: {min_size: 8}", "`tile.min_size` must be between 16 and 4096"),
        ("tile: {max_size: 5000}", "`tile.max_size` must be between 16 and 4096"),
        ("tile: {min_size: 300}", "`tile.min_size` (300) must not exceed `tile.max_size` (256)"),
        ("tile: {overlap_fraction: 0.6}", "`tile.overlap_fraction` must be between 0 and 0.5, got 0.6"),
        ("tile: {overlap_fraction: -0.1}", "`tile.overlap_fraction` must be between 0 and 0.5, got -0.1"),
        ("tile: {margin_px: 1}", "`tile.margin_px` must be between 2 and 128, got 1"),
        ("tile: {overlap_fraction: .nan}", "`tile.overlap_fraction` must be between 0 and 0.5, got NaN"),
        ("v4: {beta: .inf}", "`v4.beta` must be between 0 and 20, got inf"),
    ];
    for (text, expected) in cases {
        let p = problems(text, 4);
        assert_eq!(p.len(), 1, "{text}: {p:?}");
        assert!(
            p[0].starts_with(expected),
            "{text}:\n  got      {}\n  expected {expected}",
            p[0]
        );
    }
    // Boundary values are accepted.
    ok(
        "v4: {iterations: 10, beta: 0, min_valid_tile_fraction: 1, convergence: {epsilon_rel: 0.1}}\n\
         registration: {local_tiles: {ecc_cc_min: 0, temporal_smoothing_window: 51, rejection_kappa: 10}}\n\
         tile: {min_size: 256, max_size: 256, overlap_fraction: 0.5, margin_px: 128}",
        4,
    );
}

#[test]
fn type_errors_name_the_key_path_and_are_all_reported() {
    let p = problems(
        "v4:\n  beta: high\n  iterations: 2.5\n  convergence:\n    enabled: yes\n\
         registration:\n  local_tiles:\n    smoothing: gaussian\n    min_valid_frames: -3\n\
         tile:\n  min_size: [64]\n",
        4,
    );
    assert_eq!(
        p,
        vec![
            "`v4.iterations` must be a whole number (0 or more), got 2.5",
            "`v4.beta` must be a number, got the text \"high\"",
            "`v4.convergence.enabled` must be `true` or `false`, got the text \"yes\"",
            "`registration.local_tiles.min_valid_frames` must be a whole number (0 or more), got -3",
            "`registration.local_tiles.smoothing` must be one of `savgol`, `median`, `none`, got the text \"gaussian\"",
            "`tile.min_size` must be a whole number (0 or more), got a list",
        ]
    );
    // A section given as a scalar.
    let p = problems("v4:\n  convergence: 3\n", 4);
    assert_eq!(
        p,
        vec!["`v4.convergence` must be a section (a mapping of keys), got 3"]
    );
    // A whole number written as a float is fine; `null` keeps the default.
    let c = ok("v4: {iterations: 4.0, beta: null}\ntile: {margin_px: ~}", 4).config;
    assert_eq!(c.v4.iterations, 4);
    assert_eq!(c.v4.beta, 5.0);
    assert_eq!(c.tile.margin_px, 16);
}

#[test]
fn unknown_keys_are_errors_with_a_suggestion() {
    assert_eq!(
        problems("v4:\n  iteratons: 4\n", 4),
        vec!["unknown key `v4.iteratons`, did you mean `v4.iterations`?"]
    );
    assert_eq!(
        problems("tiles:\n  min_size: 64\n", 4),
        vec!["unknown key `tiles`, did you mean `tile`?"]
    );
    assert_eq!(
        problems("registration:\n  local_tiles:\n    ecc_ccmin: 0.3\n", 4),
        vec!["unknown key `registration.local_tiles.ecc_ccmin`, did you mean `registration.local_tiles.ecc_cc_min`?"]
    );
    // Right name, wrong section.
    assert_eq!(
        problems("v4:\n  margin_px: 8\n", 4),
        vec!["unknown key `v4.margin_px`, did you mean `tile.margin_px`?"]
    );
    // Case and dash slips.
    assert_eq!(
        problems("V4:\n  parallel-tiles: 1\n", 4),
        vec!["unknown key `V4`, did you mean `v4`?"]
    );
    assert_eq!(
        problems("v4:\n  parallel-tiles: 1\n", 4),
        vec!["unknown key `v4.parallel-tiles`, did you mean `v4.parallel_tiles`?"]
    );
    // Nothing close: the section's keys are listed.
    let p = problems("tile:\n  frobnicate: 1\n", 4);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("unknown key `tile.frobnicate`; tlr knows in `tile`: `size_factor`"),
        "{p:?}"
    );
    // Non-name keys.
    let p = problems("v4:\n  3: 4\n", 4);
    assert_eq!(p, vec!["`v4` has a key that is not a name: 3"]);
}

#[test]
fn unused_tile_compile_keys_are_warnings_not_errors() {
    let loaded = ok(
        "pipeline:\n  mode: production\nstacking:\n  method: rej\n  sigma_clip:\n    sigma_low: 2\n\
         registration:\n  mode: local_tiles\n  local_tiles:\n    ecc_cc_min: 0.3\n\
         v4:\n  adaptive_tiles:\n    use_warp_probe: true\n  debug_tile_registration: true\n\
         tile:\n  max_divisor: 6\ndebayer: true\n",
        4,
    );
    assert_eq!(loaded.config.registration.local_tiles.ecc_cc_min, 0.3);
    assert_eq!(
        loaded.warnings,
        vec![
            "`pipeline.mode` is not used by tlr and is ignored",
            "`stacking.method` is not used by tlr and is ignored",
            "`stacking.sigma_clip.sigma_low` is not used by tlr and is ignored",
            "`registration.mode` is not used by tlr and is ignored (tlr always registers tile-locally)",
            "`v4.adaptive_tiles.use_warp_probe` is not used by tlr and is ignored",
            "`v4.debug_tile_registration` is not used by tlr and is ignored",
            "`tile.max_divisor` is not used by tlr and is ignored (tlr bounds the tile size by `tile.max_size`)",
            "`debayer` is not used by tlr and is ignored",
        ]
    );
    // allow_rotation is read, and `true` is worth a warning.
    let loaded = ok("registration: {local_tiles: {allow_rotation: true}}", 4);
    assert!(loaded.config.registration.local_tiles.allow_rotation);
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].contains("registration.local_tiles.allow_rotation"));
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = "v4:\n  iteratons: 4\n  beta: lots\ntile:\n  overlap_fraction: 0.75\n";
    let err = parse_with_cores(text, "three.yaml", 4).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("`v4.iteratons`"));
    assert!(problems[1].contains("`v4.beta`"));
    assert!(problems[2].contains("`tile.overlap_fraction`"));
    // Display: a header naming the file, then one problem per line.
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 4, "{shown}");
    assert_eq!(lines[0], "configuration `three.yaml` has 3 problems:");
    for (line, problem) in lines[1..].iter().zip(problems) {
        assert_eq!(*line, format!("  - {problem}"));
    }
}

#[test]
fn parallel_tiles_rules_with_injected_core_counts() {
    // Above the machine's physical cores: an error naming both numbers.
    let p = problems("v4: {parallel_tiles: 3}", 2);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].contains("`v4.parallel_tiles` = 3") && p[0].contains("2 physical CPU cores"),
        "{p:?}"
    );
    assert_eq!(
        ok("v4: {parallel_tiles: 2}", 2).config.v4.parallel_tiles,
        Some(2)
    );
    // Above 16: rejected even with 32 cores.
    let p = problems("v4: {parallel_tiles: 17}", 32);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].contains("17") && p[0].contains("hard limit of 16"),
        "{p:?}"
    );
    let c = ok("v4: {parallel_tiles: 16}", 32).config;
    assert_eq!(c.parallel_tiles(32), 16);
    assert_eq!(problems("v4: {parallel_tiles: 16}", 8).len(), 1);
    // 0 and nonsense are rejected.
    assert_eq!(
        problems("v4: {parallel_tiles: 0}", 4),
        vec!["`v4.parallel_tiles` must be at least 1 (or `auto`), got 0"]
    );
    for bad in ["-1", "many", "2.5", "[2]"] {
        let p = problems(&format!("v4: {{parallel_tiles: {bad}}}"), 4);
        assert_eq!(p.len(), 1, "{bad}: {p:?}");
        assert!(p[0].starts_with("`v4.parallel_tiles` must be a whole number of workers or `auto`"));
    }
    // Absent, `auto` or empty: min(8, physical cores).
    for text in [
        "",
        "v4: {}",
        "v4: {parallel_tiles: auto}",
        "v4: {parallel_tiles: AUTO}",
        "v4:\n  parallel_tiles:\n",
    ] {
        for (cores, expected) in [(1, 1), (2, 2), (6, 6), (8, 8), (32, 8)] {
            let c = ok(text, cores).config;
            assert_eq!(c.v4.parallel_tiles, None, "{text:?}");
            assert_eq!(
                c.parallel_tiles(cores),
                expected,
                "{text:?} with {cores} cores"
            );
        }
    }
    // validate() on a programmatic config applies the same rules.
    let mut c = Config::default();
    c.v4.parallel_tiles = Some(3);
    assert!(c.validate(2).is_err());
    assert!(c.validate(4).is_ok());
}

#[test]
fn digest_is_stable_and_changes_with_any_value() {
    let base = Config::default();
    let d = base.digest();
    assert_eq!(d.len(), 64);
    assert!(d
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(d, Config::default().digest());
    // Formatting, comments, key order, explicit defaults and ignored keys do not matter: it is the
    // effective configuration that is hashed. Nor do settings that cannot change the image (worker
    // count, memory limits, diagnostics), so output files stay identical across worker counts.
    let same = [
        "",
        "# comment\nv4:\n  beta: 5.0\n",
        "tile: {margin_px: 16}\nv4: {iterations: 3}\nstacking: {method: rej}",
        "v4: {parallel_tiles: 2}",
        "v4: {memory_limits: {rss_warn_mb: 1000, rss_abort_mb: 2000}}",
        "v4: {diagnostics: {warp_field: false}}",
    ];
    for text in same {
        assert_eq!(ok(text, 4).config.digest(), d, "{text:?}");
    }
    let different = [
        "v4: {beta: 5.1}",
        "v4: {iterations: 4}",
        "registration: {local_tiles: {smoothing: median}}",
        "tile: {overlap_fraction: 0.3}",
    ];
    let mut digests = vec![d.clone()];
    for text in different {
        let other = ok(text, 4).config.digest();
        assert!(
            !digests.contains(&other),
            "{text:?} did not change the digest"
        );
        digests.push(other);
    }
}

#[test]
fn to_yaml_round_trips() {
    let mut configs = vec![Config::default()];
    for name in [
        "high_quality.yaml",
        "fast_preview.yaml",
        "tile_compile_v4.yaml",
    ] {
        configs.push(
            load(&config_dir().join("examples").join(name))
                .unwrap()
                .config,
        );
    }
    let mut c = Config::default();
    c.v4.parallel_tiles = Some(1);
    c.v4.beta = 0.1 + 0.2; // a float without a short decimal form
    c.registration.local_tiles.smoothing = Smoothing::None;
    configs.push(c);
    for c in configs {
        let yaml = c.to_yaml();
        assert!(yaml.contains("parallel_tiles:"), "{yaml}");
        let back = ok(&yaml, 4);
        assert_eq!(back.config, c, "{yaml}");
        assert!(back.warnings.is_empty());
        assert_eq!(back.config.digest(), c.digest());
    }
    assert!(Config::default().to_yaml().contains("parallel_tiles: auto"));
}

#[test]
fn read_and_syntax_errors_are_clear() {
    let missing = Path::new("/nonexistent/tlr/config.yaml");
    match load(missing) {
        Err(ConfigError::Read { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    let msg = load(missing).unwrap_err().to_string();
    assert!(msg.contains("/nonexistent/tlr/config.yaml"), "{msg}");

    let err = parse("v4:\n  beta: 5\n   iterations: [3\n", "broken.yaml").unwrap_err();
    match &err {
        ConfigError::Parse {
            source_name, line, ..
        } => {
            assert_eq!(source_name, "broken.yaml");
            assert!(line.is_some());
        }
        other => panic!("{other:?}"),
    }
    let shown = err.to_string();
    assert!(
        shown.starts_with("configuration `broken.yaml` is not valid YAML (line 3, column"),
        "{shown}"
    );
    assert_eq!(
        shown.matches("line 3").count(),
        1,
        "location shown once: {shown}"
    );

    // Duplicate keys are a YAML error, not a silent override.
    assert!(matches!(
        parse("v4:\n  beta: 1\n  beta: 2\n", "dup.yaml"),
        Err(ConfigError::Parse { .. })
    ));
    // A top level that is not a mapping.
    let p = problems("- v4\n- tile\n", 4);
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("must be a mapping of sections"), "{p:?}");
    assert_eq!(problems("just text", 4).len(), 1);
}

#[test]
fn loads_from_a_file_with_anchors_and_merge_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("my [odd] config (1).yaml");
    std::fs::write(
        &path,
        "tile: {min_size: &s 96, max_size: *s}\n\
         v4:\n  convergence:\n    <<: {epsilon_rel: 1.0e-4}\n    enabled: false\n",
    )
    .unwrap();
    let c = load(&path).unwrap().config;
    assert_eq!(c.tile.min_size, 96);
    assert_eq!(c.tile.max_size, 96);
    assert_eq!(c.v4.convergence.epsilon_rel, 1e-4);
    assert!(!c.v4.convergence.enabled);
}

#[test]
fn strange_documents_never_panic() {
    let docs = [
        "!tag {v4: 1}",
        "v4: !custom {iterations: 3}",
        "v4: {iterations: !!str 3}",
        "? [a, b]\n: 1",
        "v4: {iterations: 18446744073709551616}",
        "v4: {iterations: 99999999999999999999999}",
        "tile: {size_factor: 1e400}",
        "v4: &a {iterations: 3}\nregistration: *a",
        "v4:\n  <<: [1, 2]\n",
        "\u{feff}v4: {iterations: 2}",
        "---\nv4: {}\n---\ntile: {}\n",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ];
    for doc in docs {
        let _ = parse_with_cores(doc, "strange.yaml", 4);
    }
}

/// The fuzz seeds (`fuzz/seeds/config/`) and the minimised fuzz findings (`tests/data/fuzz/config/`)
/// parse or give an error, never panic.
#[test]
fn fuzz_seeds_and_findings_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = 0;
    for folder in ["fuzz/seeds/config", "tests/data/fuzz/config"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder)) else {
            continue;
        };
        for entry in entries {
            let _ = load(&entry.expect("list fuzz inputs").path());
            files += 1;
        }
    }
    assert!(files >= 3, "only {files} fuzz inputs found");
}

mod properties {
    use proptest::prelude::*;
    use tlr_core::config::{parse_with_cores, Config, Smoothing};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Arbitrary YAML-ish text never panics the parser; it parses or reports an error.
        #[test]
        fn arbitrary_text_never_panics(text in "[a-z_4v.:\\- \\n\\[\\]{}0-9&*!<>#\"',|]{0,120}") {
            let _ = parse_with_cores(&text, "fuzz.yaml", 4);
        }

        /// Any in-range configuration survives to_yaml -> parse unchanged, with the same digest.
        #[test]
        fn valid_configs_round_trip(
            iterations in 1usize..=10,
            beta in 0.0f64..=20.0,
            fraction in 0.0f64..=1.0,
            eps in 1e-6f64..=0.1,
            passes in 0usize..=5,
            cc in 0.0f64..=1.0,
            window in 1usize..=25,
            kappa in 1.0f64..=10.0,
            overlap in 0.0f64..=0.5,
            size_factor in 1.0f64..=256.0,
            smoothing in prop_oneof![Just(Smoothing::Savgol), Just(Smoothing::Median), Just(Smoothing::None)],
            workers in proptest::option::of(1usize..=4),
        ) {
            let mut c = Config::default();
            c.v4.iterations = iterations;
            c.v4.beta = beta;
            c.v4.min_valid_tile_fraction = fraction;
            c.v4.convergence.epsilon_rel = eps;
            c.v4.adaptive_tiles.max_refine_passes = passes;
            c.v4.parallel_tiles = workers;
            let lt = &mut c.registration.local_tiles;
            lt.ecc_cc_min = cc;
            lt.temporal_smoothing_window = 2 * window + 1;
            lt.rejection_kappa = kappa;
            lt.smoothing = smoothing;
            c.tile.overlap_fraction = overlap;
            c.tile.size_factor = size_factor;
            prop_assert_eq!(c.validate(4), Ok(()));
            let back = parse_with_cores(&c.to_yaml(), "round.yaml", 4).unwrap();
            prop_assert_eq!(&back.config, &c);
            prop_assert_eq!(back.config.digest(), c.digest());
        }
    }
}

mod hostile {
    //! Hostile-input bounds: size, nesting depth (flow and block), alias expansion ("billion
    //! laughs"); each refused with the file, the bound and where it was crossed.

    use tlr_core::config::{load, parse_with_cores, ConfigError, MAX_BYTES, MAX_DEPTH, MAX_VALUES};

    /// Parses and expects a rejection; returns (line, column, reason) and checks the message names the file.
    fn rejected(text: &str) -> (Option<usize>, Option<usize>, String) {
        let err = parse_with_cores(text, "hostile.yaml", 4).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("configuration `hostile.yaml` is rejected"),
            "{shown}"
        );
        match err {
            ConfigError::Rejected {
                source_name,
                line,
                column,
                reason,
            } => {
                assert_eq!(source_name, "hostile.yaml");
                assert!(shown.ends_with(&reason), "{shown}");
                (line, column, reason)
            }
            other => panic!("expected Rejected, got {other}"),
        }
    }

    #[test]
    fn flow_nesting_deeper_than_the_bound_is_rejected_where_it_happens() {
        assert_eq!(MAX_DEPTH, 64);
        for (open, close) in [("[", "]"), ("{a: ", "}")] {
            let deep = |n: usize| format!("{}1{}", open.repeat(n), close.repeat(n));
            let (line, column, reason) = rejected(&deep(MAX_DEPTH + 1));
            assert_eq!(reason, "nesting deeper than 64 levels");
            assert_eq!(line, Some(1));
            assert_eq!(column, Some(MAX_DEPTH * open.len() + 1), "{open}");
            // At the bound the document gets through to the usual checks.
            let at_bound = format!("v4: {}", deep(MAX_DEPTH - 1));
            match parse_with_cores(&at_bound, "ok.yaml", 4) {
                Err(ConfigError::Invalid { problems, .. }) => {
                    assert!(problems[0].contains("v4"), "{problems:?}")
                }
                other => panic!("{open}: {other:?}"),
            }
        }
        let shown = parse_with_cores(&"[".repeat(100), "deep.yaml", 4)
            .unwrap_err()
            .to_string();
        assert_eq!(
            shown,
            "configuration `deep.yaml` is rejected (line 1, column 65): nesting deeper than 64 levels"
        );
    }

    #[test]
    fn block_nesting_deeper_than_the_bound_is_rejected() {
        let mapping: String = (0..=MAX_DEPTH)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect();
        assert_eq!(rejected(&mapping).0, Some(MAX_DEPTH + 1));
        let sequence: String = (0..=MAX_DEPTH)
            .map(|i| format!("{}-\n", " ".repeat(i)))
            .collect();
        assert_eq!(rejected(&sequence).0, Some(MAX_DEPTH + 1));
        // Compact nesting on one line is nesting too.
        let (line, _, reason) = rejected(&"- ".repeat(MAX_DEPTH + 1));
        assert_eq!(line, Some(1));
        assert_eq!(reason, "nesting deeper than 64 levels");
    }

    #[test]
    fn alias_expansion_is_bounded_before_it_happens() {
        // a0 has 10 values, each further anchor 10 aliases of the previous one: 10^10 once expanded.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let aliases = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{aliases}]\n"));
        }
        let (line, _, reason) = rejected(&text);
        assert!(
            reason.starts_with(&format!(
                "more than {MAX_VALUES} values once aliases are expanded"
            )),
            "{reason}"
        );
        // a4 expands to 11111 values (a0..a3 hold 1111 more): the first line past 100 000 is a4's.
        assert_eq!(line, Some(5));
        // Many aliases of a big anchor (quadratic work without the bound) are refused the same way.
        let big = vec!["x"; 5_000].join(", ");
        let refs = vec!["*b"; 100].join(", ");
        let (_, _, reason) = rejected(&format!("b: &b [{big}]\nc: [{refs}]\n"));
        assert!(reason.contains("aliases are expanded"), "{reason}");
        // A few aliases, as a user would write them, are fine.
        let ok = "tile: {min_size: &s 96, max_size: *s}\n";
        assert_eq!(
            parse_with_cores(ok, "ok.yaml", 4)
                .unwrap()
                .config
                .tile
                .max_size,
            96
        );
    }

    #[test]
    fn oversized_text_and_files_are_rejected_without_reading() {
        let (line, column, reason) = rejected(&" ".repeat(MAX_BYTES + 1));
        assert_eq!((line, column), (None, None));
        assert_eq!(
            reason,
            "1048577 bytes is more than the 1048576-byte limit for a configuration (tlr's are a few KB)"
        );
        // A 50 MB file (sparse: nothing is written) is refused from its length alone.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.yaml");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(50 << 20)
            .unwrap();
        let shown = load(&path).unwrap_err().to_string();
        assert!(
            shown.contains("huge.yaml` is rejected: 52428800 bytes"),
            "{shown}"
        );
    }

    /// The depth check streams: a text of the full 1 MiB of nested flow mappings (minutes of libyaml
    /// scanning before the bound existed) is refused at the 65th level, whatever follows it.
    #[test]
    fn deep_nesting_is_refused_at_the_bound_whatever_follows() {
        let text = "{a: ".repeat(MAX_BYTES / 4);
        assert_eq!(text.len(), MAX_BYTES);
        let (line, column, _) = rejected(&text);
        assert_eq!((line, column), (Some(1), Some(4 * MAX_DEPTH + 1)));
    }
}
