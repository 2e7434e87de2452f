//! What a checkpoint must match to be continued: the followed folder, the settings, and the identity
//! of every frame file it covers ([`CheckpointSource`]); a frame file's identity ([`FrameFile`]: exact
//! name, size, modification time, SHA-256 of the header blocks); exact file names in JSON
//! ([`RawName`]).
//!
//! What it does not: decide what to do about a mismatch (the live session refuses to resume and
//! names the reason), read pixels, or follow folders.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::Read as _;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// FITS block length, bytes.
const BLOCK: usize = 2880;
/// Header blocks hashed at most (a header longer than this, about 36 000 cards, is hashed in part).
const MAX_HEADER_BLOCKS: usize = 1000;
/// Prefix of a name stored as hex (a name that is not UTF-8, or that starts with this prefix).
const HEX_PREFIX: &str = "hex:";

/// A file name exactly as the operating system gave it (its raw bytes). In JSON it is the name
/// itself when it is UTF-8, else `hex:` and the bytes in hex, so that any name round-trips exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawName(Vec<u8>);

impl RawName {
    /// The name of `name`'s bytes.
    pub fn new(name: &OsStr) -> Self {
        Self(name.as_bytes().to_vec())
    }

    /// The name as an OS string (exact).
    pub fn to_os_string(&self) -> OsString {
        OsString::from_vec(self.0.clone())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether this is a plain file name: not empty, not `.` or `..`, without `/` or NUL (a name
    /// from a damaged or crafted checkpoint must not reach outside the folder).
    pub fn is_plain(&self) -> bool {
        !self.0.is_empty()
            && self.0 != b"."
            && self.0 != b".."
            && !self.0.iter().any(|b| *b == b'/' || *b == 0)
    }
}

impl fmt::Display for RawName {
    /// Lossy (U+FFFD for bytes that are not UTF-8): for messages only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl Serialize for RawName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) if !text.starts_with(HEX_PREFIX) => s.serialize_str(text),
            _ => s.serialize_str(&format!("{HEX_PREFIX}{}", super::checkpoint::hex(&self.0))),
        }
    }
}

impl<'de> Deserialize<'de> for RawName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.strip_prefix(HEX_PREFIX) {
            None => Ok(Self(text.into_bytes())),
            Some(digits) => unhex(digits)
                .map(Self)
                .ok_or_else(|| serde::de::Error::custom(format!("bad hex file name `{text}`"))),
        }
    }
}

fn unhex(digits: &str) -> Option<Vec<u8>> {
    let bytes = digits.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

/// One frame file's identity. A renamed (or copied with its time) frame keeps it; a rewritten or
/// replaced one does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameFile {
    /// The file name (in the followed folder), exact.
    pub name: RawName,
    /// Length, bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// SHA-256 (hex) of the primary header's blocks, up to the one holding `END`.
    pub header_sha256: String,
}

/// What makes two frame files the same frame, whatever their names: size, time, header hash.
pub type FrameKey = (u64, i64, String);

impl FrameFile {
    /// Reads the identity of the file at `path` (its size and time, and its header blocks).
    ///
    /// # Errors
    /// The operating system's error when the file cannot be opened or read.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let mut file = fs::File::open(path)?;
        let meta = file.metadata()?;
        let mut hasher = Sha256::new();
        let mut block = vec![0u8; BLOCK];
        for _ in 0..MAX_HEADER_BLOCKS {
            let n = read_full(&mut file, &mut block)?;
            hasher.update(&block[..n]);
            let end = block[..n]
                .chunks_exact(80)
                .any(|card| card.starts_with(b"END") && card[3..].iter().all(|b| *b == b' '));
            if end || n < BLOCK {
                break;
            }
        }
        Ok(Self {
            name: RawName::new(path.file_name().unwrap_or_default()),
            size: meta.len(),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            header_sha256: super::checkpoint::hex(&hasher.finalize()),
        })
    }

    /// What identifies the frame whatever its name.
    pub fn key(&self) -> FrameKey {
        (self.size, self.mtime_ns, self.header_sha256.clone())
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Where a checkpoint's state came from: what a session must match to continue it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointSource {
    /// Canonical path of the followed folder (raw bytes); `None` for frames pushed from memory.
    pub folder: Option<RawName>,
    /// Digest of the effective configuration ([`crate::config::Config::digest`]).
    pub config_digest: String,
    /// The effective configuration (JSON), to name the settings that differ.
    pub config: serde_json::Value,
    /// Registration mode (`tile_local`, `global_only`).
    pub registration: String,
    /// Every frame file the checkpoint covers (used or rejected), in the order they came.
    pub frames: Vec<FrameFile>,
}

/// Settings that are not part of the configuration digest (runtime choices): never a reason to refuse.
const RUNTIME_KEYS: [&str; 3] = ["v4.parallel_tiles", "v4.memory_limits", "v4.diagnostics"];

impl CheckpointSource {
    /// Why a session with `current`'s folder and settings must not continue a checkpoint of `self`
    /// (frames are not compared: see [`CheckpointSource::changed_frame`]); `None` when it may.
    pub fn mismatch(&self, current: &CheckpointSource) -> Option<String> {
        let show = |f: &Option<RawName>| match f {
            Some(name) => format!("folder `{name}`"),
            None => "frames pushed from memory".to_string(),
        };
        if self.folder != current.folder {
            return Some(format!(
                "it was made from {}, this session follows {}",
                show(&self.folder),
                show(&current.folder)
            ));
        }
        if self.registration != current.registration {
            return Some(format!(
                "it was made with registration {}, this session uses {} (`--global-only` selects \
                 global_only)",
                self.registration, current.registration
            ));
        }
        if self.config_digest != current.config_digest {
            let mut diffs = Vec::new();
            json_diff(&self.config, &current.config, "", &mut diffs);
            diffs.retain(|(key, _, _)| !RUNTIME_KEYS.iter().any(|k| key.starts_with(k)));
            if diffs.is_empty() {
                return Some(format!(
                    "it was made with configuration digest {}, this session's is {}",
                    self.config_digest, current.config_digest
                ));
            }
            let list: Vec<String> = diffs
                .iter()
                .map(|(key, was, now)| format!("`{key}` was {was}, is now {now}"))
                .collect();
            return Some(format!(
                "it was made with other settings: {}",
                list.join("; ")
            ));
        }
        None
    }

    /// The first frame this checkpoint covers that is still in `folder` under its name but is not
    /// the same file any more (size, time or header changed), as a message; `None` when every such
    /// frame is unchanged. Frames no longer there (moved away or renamed) are fine.
    pub fn changed_frame(&self, folder: &Path) -> Option<String> {
        for frame in &self.frames {
            let path = folder.join(frame.name.to_os_string());
            if !path.is_file() {
                continue;
            }
            match FrameFile::of(&path) {
                Ok(now) if now.key() == frame.key() => {}
                Ok(now) => {
                    let what = if now.size != frame.size {
                        format!("its size was {} bytes, is now {}", frame.size, now.size)
                    } else if now.mtime_ns != frame.mtime_ns {
                        "its modification time changed".to_string()
                    } else {
                        "its header changed".to_string()
                    };
                    return Some(format!(
                        "frame `{}` was used by it and has changed since ({what})",
                        frame.name
                    ));
                }
                Err(e) => {
                    return Some(format!(
                        "frame `{}` was used by it and cannot be read now: {e}",
                        frame.name
                    ))
                }
            }
        }
        None
    }
}

/// Collects `(key path, old, new)` for every leaf where `a` and `b` differ.
fn json_diff(
    a: &serde_json::Value,
    b: &serde_json::Value,
    at: &str,
    out: &mut Vec<(String, String, String)>,
) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                json_diff(
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                    &path,
                    out,
                );
            }
        }
        _ if a != b => out.push((at.to_string(), a.to_string(), b.to_string())),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_exactly_and_stay_readable() {
        for raw in [
            &b"light_0001.fits"[..],
            b"light_\xff\xfe.fits",
            b"hex:looks-like-hex.fits",
            b"",
        ] {
            let name = RawName(raw.to_vec());
            let json = serde_json::to_string(&name).expect("serialise");
            let back: RawName = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, name, "{json}");
        }
        assert_eq!(
            serde_json::to_string(&RawName(b"a.fits".to_vec())).expect("json"),
            "\"a.fits\""
        );
        for bad in ["\"hex:f\"", "\"hex:zz\"", "3"] {
            assert!(serde_json::from_str::<RawName>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identity_follows_content_not_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut header = vec![b' '; BLOCK];
        header[..6].copy_from_slice(b"SIMPLE");
        header[80..83].copy_from_slice(b"END");
        let a = dir.path().join("a.fits");
        fs::write(&a, [header.clone(), vec![0u8; BLOCK]].concat()).expect("write");
        let first = FrameFile::of(&a).expect("identity");
        let b = dir.path().join("b.fits");
        fs::rename(&a, &b).expect("rename");
        let renamed = FrameFile::of(&b).expect("identity");
        assert_eq!(renamed.key(), first.key());
        assert_ne!(renamed.name, first.name);
        // A changed header changes the hash.
        let mut other = header;
        other[160..163].copy_from_slice(b"XYZ");
        fs::write(&b, [other, vec![0u8; BLOCK]].concat()).expect("write");
        assert_ne!(
            FrameFile::of(&b).expect("identity").header_sha256,
            first.header_sha256
        );
    }
}
