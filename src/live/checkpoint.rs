//! Saving and loading a live session ([`LiveState::save`], [`LiveState::load`]) and the checkpoint
//! format: `checkpoint.json` (the commit point: grid, counters, shift histories, frame lists, the
//! bootstrap qualities, the [`CheckpointSource`], and the name, length and SHA-256 of the files below),
//! `state-<generation>.bin` (every tile's planes as little-endian f32 after [`STATE_MAGIC`]) and
//! `global_reference-<generation>.fits`. Every file is written with [`crate::atomic`] (temporary file,
//! fsync, rename), the JSON last; a loaded state is checked against the JSON (bounds, length,
//! checksum) before it is used.
//!
//! What it does not: decide whether a checkpoint may be resumed (the `tlr` crate compares its
//! [`CheckpointSource`] with the folder and settings), or choose when to save.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::Path;

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fits::{self, OutputMeta, SampleFormat};
use crate::global::{FrameQuality, FrameTransform};
use crate::{Shift, TileBox};

use super::colour::{LiveColour, PlaneSums};
use super::{CheckpointSource, LiveError, LiveOptions, LiveState, LiveTile};
use crate::select::MAX_PLANES;

/// Version of the checkpoint format written by [`LiveState::save`].
///
/// 4: the session's output geometry (`base`, the bootstrap frames' mean transform) is stored; a
/// format-3 checkpoint stacked in its reference frame's geometry and cannot be continued in another.
pub const CHECKPOINT_VERSION: u32 = 4;
/// Name of the checkpoint's JSON file (the commit point).
pub const CHECKPOINT_JSON: &str = "checkpoint.json";
/// Per-tile arrays stored in a checkpoint, in plane order.
const PLANES: usize = 6;

/// First bytes of a checkpoint state file.
pub const STATE_MAGIC: &[u8; 8] = b"TLRLIVE2";

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LiveError {
    let path = path.to_path_buf();
    move |source| LiveError::CheckpointIo { path, source }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The small part of a tile's state kept in the checkpoint JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TileMeta {
    tile: TileBox,
    history: Vec<Shift>,
    frames_used: usize,
    frames_rejected: usize,
    since_rebase: usize,
    rebases: usize,
}

/// The checkpoint JSON.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    generation: u64,
    rows: usize,
    cols: usize,
    tile_px: usize,
    options: LiveOptions,
    /// The output geometry relative to the global reference frame (the bootstrap frames' mean).
    base: FrameTransform,
    norm: Vec<FrameQuality>,
    frames_seen: usize,
    frames_used: Vec<String>,
    frames_rejected: Vec<String>,
    tiles: Vec<TileMeta>,
    /// The state file (`state-<generation>.bin`) holding the tiles' planes.
    state_file: String,
    /// Its length after the magic, bytes.
    state_bytes: u64,
    /// SHA-256 of those bytes, hex.
    state_sha256: String,
    /// The global reference frame's file, if the session has one.
    global_reference: Option<String>,
    /// The folder, settings and frame files the state came from.
    source: CheckpointSource,
    /// Colour sessions: pattern and route (absent: a mono session, also in checkpoints written before
    /// live sessions had colour). Each tile's state then also holds its planes' sums and weight.
    #[serde(default)]
    colour: Option<LiveColour>,
    /// Colour sessions: the bootstrap frames' plane backgrounds.
    #[serde(default)]
    norm_planes: Vec<Option<[f32; MAX_PLANES]>>,
}

impl LiveTile {
    fn meta(&self) -> TileMeta {
        TileMeta {
            tile: self.tile,
            history: self.history.clone(),
            frames_used: self.frames_used,
            frames_rejected: self.frames_rejected,
            since_rebase: self.since_rebase,
            rebases: self.rebases,
        }
    }

    /// Every array of the tile's state, in file order: the luminance's, then the colour planes'.
    fn planes(&self) -> Vec<&Array2<f32>> {
        let mut arrays = vec![
            &self.reference,
            &self.sum_wi,
            &self.sum_w,
            &self.count,
            &self.mean,
            &self.m2,
        ];
        arrays.extend(self.planes.arrays());
        arrays
    }
}

impl LiveState {
    /// Saves the state into `dir` (created if needed). `global_reference`, when given, is written as
    /// this generation's global reference frame (pass it once, when the global pass has fixed it;
    /// later saves keep pointing at it).
    ///
    /// Atomic and crash-safe: the state file and the reference are written under new names
    /// (temporary file, fsync, rename), then the JSON, which names them and holds the state file's
    /// length and SHA-256, replaces the previous JSON (fsync, rename, fsync of the folder). The JSON is
    /// the commit point: a save interrupted at any moment (also by SIGKILL or a power cut) leaves the
    /// previous checkpoint complete and loadable, and the frames list and accumulators a JSON points
    /// at are always from the same moment. Files no JSON points at any more are removed afterwards.
    ///
    /// # Errors
    /// [`LiveError::CheckpointIo`] / [`LiveError::CheckpointFits`] / [`LiveError::Checkpoint`] naming
    /// the file.
    pub fn save(
        &mut self,
        dir: &Path,
        global_reference: Option<ArrayView2<f32>>,
    ) -> Result<(), LiveError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        crate::atomic::remove_stale_temporaries(dir, None);
        let generation = self.generation + 1;
        let mut reference_file = self.reference_file.clone();
        if let Some(image) = global_reference {
            let name = format!("global_reference-{generation}.fits");
            let path = dir.join(&name);
            fits::write_image_atomic(
                &path,
                image,
                SampleFormat::F32,
                &OutputMeta::tlr_output("live-checkpoint"),
            )
            .map_err(|source| LiveError::CheckpointFits { path, source })?;
            reference_file = Some(name);
        }
        let state_file = format!("state-{generation}.bin");
        let (state_bytes, state_sha256) = self.write_state(&dir.join(&state_file))?;
        let file = CheckpointFile {
            version: CHECKPOINT_VERSION,
            generation,
            rows: self.rows,
            cols: self.cols,
            tile_px: self.tile_px,
            options: self.options,
            base: self.base,
            norm: self.norm.clone(),
            frames_seen: self.frames_seen,
            frames_used: self.frames_used.clone(),
            frames_rejected: self.frames_rejected.clone(),
            tiles: self.tiles.iter().map(LiveTile::meta).collect(),
            state_file: state_file.clone(),
            state_bytes,
            state_sha256,
            global_reference: reference_file.clone(),
            source: self.source.clone(),
            colour: self.colour,
            norm_planes: self.norm_planes.clone(),
        };
        let json_path = dir.join(CHECKPOINT_JSON);
        let text = serde_json::to_string(&file).map_err(|e| LiveError::Checkpoint {
            path: json_path.clone(),
            reason: e.to_string(),
        })?;
        // The JSON is the commit point; the atomic writer also syncs the folder entry, so a power cut
        // cannot bring back the previous JSON after newer frames were reported as checkpointed.
        crate::atomic::write_bytes(&json_path, text.as_bytes())?;
        self.generation = generation;
        self.reference_file = reference_file;
        // The JSON now points at the new files: the others are garbage.
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let ours = (name.starts_with("state-")
                    && (name.ends_with(".bin") || name.ends_with(".fits")))
                    || (name.starts_with("global_reference") && name.ends_with(".fits"));
                let kept = name == state_file || Some(&name) == self.reference_file.as_ref();
                if ours && !kept {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Writes every tile's planes, in tile order, as little-endian f32 after [`STATE_MAGIC`], streamed
    /// (no copy of the state is made), atomically. Returns the data length and its SHA-256 (hex).
    fn write_state(&self, path: &Path) -> Result<(u64, String), LiveError> {
        let mut digest = (0u64, String::new());
        crate::atomic::write_file(path, |tmp| {
            let file = crate::atomic::create_new(tmp)?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            out.write_all(STATE_MAGIC).map_err(io_error(tmp))?;
            let mut hasher = Sha256::new();
            let mut bytes = 0u64;
            let mut buf: Vec<u8> = Vec::new();
            for tile in &self.tiles {
                for plane in tile.planes() {
                    for row in plane.rows() {
                        buf.clear();
                        for v in row {
                            buf.extend_from_slice(&v.to_le_bytes());
                        }
                        hasher.update(&buf);
                        out.write_all(&buf).map_err(io_error(tmp))?;
                        bytes += buf.len() as u64;
                    }
                }
            }
            let file = out.into_inner().map_err(|e| LiveError::CheckpointIo {
                path: tmp.to_path_buf(),
                source: e.into_error(),
            })?;
            drop(file); // the atomic writer syncs and renames it
            digest = (bytes, hex(&hasher.finalize()));
            Ok::<(), LiveError>(())
        })?;
        Ok(digest)
    }

    /// Loads a checkpoint folder written by [`LiveState::save`]; also returns the global reference
    /// frame when the checkpoint has one.
    ///
    /// # Errors
    /// [`LiveError::Checkpoint`] for a missing, unreadable or inconsistent checkpoint (naming the
    /// file: e.g. a state file whose length or checksum differs from what the JSON recorded),
    /// [`LiveError::CheckpointFits`] for an unreadable reference frame.
    pub fn load(dir: &Path) -> Result<(Self, Option<Array2<f32>>), LiveError> {
        let json_path = dir.join(CHECKPOINT_JSON);
        let bad = |path: &Path, reason: String| LiveError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let text = fs::read_to_string(&json_path).map_err(io_error(&json_path))?;
        let version: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| bad(&json_path, format!("not a tlr live checkpoint: {e}")))?;
        if version["version"].as_u64() != Some(u64::from(CHECKPOINT_VERSION)) {
            return Err(LiveError::CheckpointVersion {
                path: json_path,
                found: version["version"].to_string(),
            });
        }
        let file: CheckpointFile = serde_json::from_value(version)
            .map_err(|e| bad(&json_path, format!("not a tlr live checkpoint: {e}")))?;
        let plain = |name: &str| {
            !name.is_empty() && Path::new(name).file_name() == Some(std::ffi::OsStr::new(name))
        };
        if !plain(&file.state_file)
            || !file.global_reference.as_deref().is_none_or(plain)
            || !file.source.frames.iter().all(|f| f.name.is_plain())
        {
            return Err(bad(
                &json_path,
                "file names must be plain names".to_string(),
            ));
        }
        let mut tiles = Vec::with_capacity(file.tiles.len());
        let mut expected = 0u64;
        // Colour: the planes' sums and their weight after the luminance's arrays.
        let colour_arrays = file.colour.map_or(0, |c| c.route.planes() + 1);
        let arrays = PLANES + colour_arrays;
        for (k, meta) in file.tiles.iter().enumerate() {
            let t = meta.tile;
            let inside = |start: usize, len: usize, end: usize| {
                len > 0 && start.checked_add(len).is_some_and(|e| e <= end)
            };
            // Checked: any number may be in a damaged or crafted file.
            let bytes = (arrays * 4)
                .checked_mul(t.h)
                .and_then(|b| b.checked_mul(t.w))
                .and_then(|b| u64::try_from(b).ok())
                .and_then(|b| expected.checked_add(b));
            match bytes {
                Some(total) if inside(t.y0, t.h, file.rows) && inside(t.x0, t.w, file.cols) => {
                    expected = total;
                }
                _ => return Err(bad(&json_path, format!("tile {k} does not fit the image"))),
            }
        }
        let state_path = dir.join(&file.state_file);
        if expected != file.state_bytes {
            return Err(bad(
                &json_path,
                format!(
                    "the tiles need {expected} bytes of state, the JSON records {}",
                    file.state_bytes
                ),
            ));
        }
        let len = fs::metadata(&state_path)
            .map_err(io_error(&state_path))?
            .len();
        if len.checked_sub(STATE_MAGIC.len() as u64) != Some(expected) {
            return Err(bad(
                &state_path,
                format!(
                    "state file has {len} bytes, {CHECKPOINT_JSON} expects {} (not from the same save?)",
                    STATE_MAGIC.len() as u64 + expected
                ),
            ));
        }
        let mut input = std::io::BufReader::with_capacity(
            1 << 20,
            fs::File::open(&state_path).map_err(io_error(&state_path))?,
        );
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(io_error(&state_path))?;
        if &magic != STATE_MAGIC {
            return Err(bad(&state_path, "not a tlr live state file".to_string()));
        }
        let mut hasher = Sha256::new();
        let mut buf: Vec<u8> = Vec::new();
        for meta in &file.tiles {
            let t = meta.tile;
            let mut plane = || -> Result<Array2<f32>, LiveError> {
                buf.resize(t.h * t.w * 4, 0);
                input.read_exact(&mut buf).map_err(io_error(&state_path))?;
                hasher.update(&buf);
                let values = buf
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                Array2::from_shape_vec((t.h, t.w), values)
                    .map_err(|e| bad(&state_path, e.to_string()))
            };
            tiles.push(LiveTile {
                tile: t,
                margin: file.options.margin_px,
                reference: plane()?,
                prepared: None,
                sum_wi: plane()?,
                sum_w: plane()?,
                count: plane()?,
                mean: plane()?,
                m2: plane()?,
                history: meta.history.clone(),
                frames_used: meta.frames_used,
                frames_rejected: meta.frames_rejected,
                since_rebase: meta.since_rebase,
                rebases: meta.rebases,
                planes: PlaneSums::from_arrays(
                    (0..colour_arrays)
                        .map(|_| plane())
                        .collect::<Result<_, _>>()?,
                ),
            });
        }
        if hex(&hasher.finalize()) != file.state_sha256 {
            return Err(bad(
                &state_path,
                format!("checksum differs from the one in {CHECKPOINT_JSON} (file damaged?)"),
            ));
        }
        let reference = match &file.global_reference {
            Some(name) => {
                let path = dir.join(name);
                Some(
                    fits::read_image(&path)
                        .map_err(|source| LiveError::CheckpointFits { path, source })?
                        .1,
                )
            }
            None => None,
        };
        Ok((
            Self {
                rows: file.rows,
                cols: file.cols,
                tile_px: file.tile_px,
                options: file.options,
                tiles,
                base: file.base,
                norm: file.norm,
                frames_seen: file.frames_seen,
                frames_used: file.frames_used,
                frames_rejected: file.frames_rejected,
                generation: file.generation,
                reference_file: file.global_reference,
                source: file.source,
                colour: file.colour,
                norm_planes: file.norm_planes,
            },
            reference,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::global::GlobalPass;
    use crate::live::tests::{sim, start};

    #[test]
    fn checkpoint_round_trip_is_exact() {
        let s = sim(8);
        let mut pass = GlobalPass::new();
        let (mut state, _) = start(&s, &mut pass, 5);
        let image = s.frame(5);
        let q = pass.add_frame_detailed(image.view());
        state.add_frame("f005.fits", image.view(), &q).expect("ok");
        let dir = tempfile::tempdir().expect("tmp");
        let reference = s.frame(0);
        state
            .save(dir.path(), Some(reference.view()))
            .expect("save");
        state
            .save(dir.path(), Some(reference.view()))
            .expect("save twice");
        let (mut loaded, gref) = LiveState::load(dir.path()).expect("load");
        assert_eq!(gref.expect("reference").dim(), (192, 192));
        assert_eq!(loaded.frames_used(), state.frames_used());
        let a = state.snapshot();
        let b = loaded.snapshot();
        assert!(a
            .iter()
            .zip(b.iter())
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan())));
        // Both continue identically.
        let image = s.frame(6);
        let q = pass.add_frame_detailed(image.view());
        let ra = state.add_frame("f006.fits", image.view(), &q).expect("ok");
        let rb = loaded.add_frame("f006.fits", image.view(), &q).expect("ok");
        assert_eq!(ra, rb);
        let states = fs::read_dir(dir.path())
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.file_name().to_string_lossy().starts_with("state-"))
                    .unwrap_or(false)
            })
            .count();
        assert_eq!(states, 1, "old state images are removed");
    }

    /// A bootstrap frame whose stars could not be measured (a cloud, a blank frame) has NaN in its
    /// quality; JSON has no NaN (serde_json writes null), and the checkpoint must still load.
    #[test]
    fn a_checkpoint_with_an_unmeasurable_bootstrap_frame_loads() {
        let s = sim(8);
        let mut pass = GlobalPass::new();
        let mut frames = crate::live::tests::bootstrap_frames(&s, &mut pass, 6);
        let blank = ndarray::Array2::from_elem(s.frame(0).dim(), 100.0f32);
        frames[3].quality = pass.add_frame(blank.view());
        assert!(frames[3].quality.fwhm.is_nan(), "{:?}", frames[3].quality);
        let (mut state, _) =
            LiveState::bootstrap(&frames, crate::live::tests::options()).expect("bootstrap");
        let dir = tempfile::tempdir().expect("tmp");
        state.save(dir.path(), None).expect("save");
        let (loaded, _) =
            LiveState::load(dir.path()).expect("a checkpoint with NaN qualities loads");
        assert_eq!(loaded.frames_used(), state.frames_used());
    }

    #[test]
    fn interrupted_save_leaves_the_previous_checkpoint_and_damage_is_detected() {
        let s = sim(8);
        let mut pass = GlobalPass::new();
        let (mut state, _) = start(&s, &mut pass, 5);
        let dir = tempfile::tempdir().expect("tmp");
        state
            .save(dir.path(), Some(s.frame(0).view()))
            .expect("save");
        let committed = state.snapshot();
        // What a save killed before its commit point leaves behind: a newer state file, a newer
        // reference and temporary files. The JSON still names the old ones.
        let image = s.frame(5);
        let q = pass.add_frame_detailed(image.view());
        state.add_frame("f005.fits", image.view(), &q).expect("ok");
        fs::write(dir.path().join("state-2.bin"), b"TLRLIVE2 half").expect("write");
        fs::write(dir.path().join(".checkpoint.json.tmp-99999999-0"), b"{").expect("write");
        fs::write(dir.path().join(".state-2.bin.tmp-99999999"), b"x").expect("write");
        let (loaded, reference) = LiveState::load(dir.path()).expect("previous checkpoint");
        assert_eq!(loaded.frames_used().len(), 5);
        assert!(reference.is_some());
        let again = loaded.snapshot();
        assert!(committed
            .iter()
            .zip(again.iter())
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan())));
        // The next save cleans up and commits generation 2.
        state.save(dir.path(), None).expect("save 2");
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["checkpoint.json", "global_reference-1.fits", "state-2.bin"]
        );
        let (loaded, reference) = LiveState::load(dir.path()).expect("load 2");
        assert_eq!(loaded.frames_used().len(), 6);
        assert!(reference.is_some(), "the reference is kept across saves");
        // A damaged state file is an error naming it, never a silently wrong state.
        let path = dir.path().join("state-2.bin");
        let mut bytes = fs::read(&path).expect("read");
        let k = bytes.len() / 2;
        bytes[k] ^= 0x40;
        fs::write(&path, &bytes).expect("write");
        let err = LiveState::load(dir.path()).expect_err("damaged");
        assert!(
            err.to_string().contains("state-2.bin") && err.to_string().contains("checksum"),
            "{err}"
        );
        bytes.truncate(k);
        fs::write(&path, &bytes).expect("write");
        let err = LiveState::load(dir.path()).expect_err("truncated");
        assert!(err.to_string().contains("state-2.bin"), "{err}");
    }

    #[test]
    fn bad_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        fs::write(dir.path().join(CHECKPOINT_JSON), "{nope").expect("write");
        let err = LiveState::load(dir.path()).expect_err("must fail");
        assert!(err.to_string().contains(CHECKPOINT_JSON), "{err}");
    }

    /// The session's geometry is saved and restored exactly; a format-3 checkpoint (without it) is
    /// refused, saying why and pointing to `--fresh`.
    #[test]
    fn the_session_geometry_is_kept_and_format_3_is_refused() {
        let s = sim(7);
        let mut pass = GlobalPass::new();
        let (mut state, _) = start(&s, &mut pass, 5);
        let dir = tempfile::tempdir().expect("tmp");
        state.save(dir.path(), None).expect("save");
        let (loaded, _) = LiveState::load(dir.path()).expect("load");
        assert_eq!(loaded.base(), state.base());
        let json = dir.path().join(CHECKPOINT_JSON);
        let mut v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&json).expect("json")).expect("json");
        v["version"] = serde_json::json!(3);
        v.as_object_mut().expect("object").remove("base");
        fs::write(&json, v.to_string()).expect("write");
        let err = LiveState::load(dir.path()).expect_err("format 3");
        let text = err.to_string();
        assert!(
            text.contains("format 3") && text.contains("geometry") && text.contains("--fresh"),
            "{text}"
        );
    }
}
