//! Folder follower: hands out the frames of a folder that capture software is writing into, each
//! once, and only once it is complete. Tail mode (`tlr watch`) is built on it.
//!
//! What it does ([`Follower`]):
//! - first hands out the frames already in the folder, in scan order (`DATE-OBS`, then file name,
//!   see [`tlr_core::scan::sort_frames`]), then every new frame once it is complete, as
//!   [`FollowEvent::Ready`]. Files it cannot use become one [`FollowEvent::Skipped`] with a reason;
//! - learns about changes from file events (`notify`: inotify on Linux, which also reports
//!   close-after-write) or, with [`FollowOptions::poll`], from `notify`'s polling watcher (network
//!   shares deliver no events). It also lists the folder again every
//!   [`FollowOptions::rescan_interval`] as a safety net for missed or overflowed events;
//! - works lazily: a new file costs a path and a small state until [`Follower::next`] is called.
//!   Frames that arrive faster than they are consumed wait on disk; none is dropped.
//!
//! Completion policy (a clean open proves nothing: N.I.N.A., INDI and Ekos write directly under the
//! final name). A frame is handed out when all of these hold:
//! 1. its size, modification time and inode have not changed for [`FollowOptions::stable_for`]
//!    (measured from the last file event or observed change; debounce: a file written in chunks is
//!    examined only once it stops changing). Without `poll`, the file's time stamp counts too:
//!    "unchanged for" is at least its age minus 2 s (FAT stores times in 2 s steps), so a folder
//!    of old frames starts without waiting and a stale truncated file found at start is given up
//!    at once; with `poll` (network shares, whose clocks may differ) only observation counts;
//! 2. [`tlr_core::fits::read_header`]'s checks pass: FITS signature, `END` card, file length at least
//!    the header plus the padded data that BITPIX and NAXISn promise;
//! 3. with [`FollowOptions::check_pixels`] (default), at least one pixel is finite (rows are read in
//!    bands until the first finite value, so a normal frame costs one small read);
//! 4. the file is unchanged between that check and the moment it is handed out (checked again).
//!
//! What happens to the other files:
//! - *incomplete* (empty, header without `END`, data shorter than promised or unpadded, a short
//!   file that starts like FITS, unreadable): examined again while it changes, and every
//!   `stable_for` while it does not; once it has not changed for [`FollowOptions::give_up_after`]
//!   it is reported as skipped;
//! - *broken* (not FITS, bad structural keyword, unsupported shape, every pixel NaN): reported as
//!   skipped after [`FollowOptions::retries`] + 1 examinations in a row, `stable_for` apart
//!   (network shares and in-place header rewrites can make a good file look broken once);
//! - a skipped file is looked at again only if its size, time stamp or inode changes; it is then
//!   treated as a new file (a capture program may rewrite a bad frame);
//! - silently ignored, never reported: hidden files (`.name`), temporary files (`*.tmp`, `*.temp`,
//!   `*.part`, `*.partial`, `*.crdownload`, `*.swp`, `name~`), names not matching
//!   [`FollowOptions::patterns`], [`FollowOptions::exclude`]d paths, sub-folders, and tlr's own
//!   outputs (header `CREATOR` starting with `tlr`, [`tlr_core::fits::is_own_output`]): a snapshot
//!   written into the watched folder every frame would otherwise flood the report;
//! - a frame is handed out at most once per file name, ever: a file that changes after it was
//!   handed out (rewritten) is not handed out again; the change is reported once as
//!   [`FollowEvent::Skipped`]. A used file that is deleted and created again under the same name is
//!   not used again either. [`Follower::mark_seen`] puts names from a checkpoint into this state.
//!
//! What it does not: read or keep pixels (the pipeline reads the frames it is handed), check that
//! frames share one size or filter (the consumer decides), recurse into sub-folders, run an async
//! runtime. It uses threads only inside `notify` (the watcher's callback thread); the callback
//! sends into a bounded `crossbeam-channel` and never blocks (on overflow the folder is rescanned).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};

use tlr_core::fits::FrameHeader;
use tlr_core::scan::{self, NameFilter, ScanError};

mod decide;
mod examine;

use decide::{Sig, State};
use examine::is_temporary;
pub use examine::TEMP_SUFFIXES;

/// Capacity of the channel between `notify`'s callback thread and the follower. When it is full
/// the callback drops the event and asks for a rescan instead of blocking.
const EVENT_CAPACITY: usize = 8192;

/// How to follow a folder.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowOptions {
    /// Glob patterns matched case-insensitively against file names (default
    /// [`tlr_core::scan::DEFAULT_PATTERNS`]).
    pub patterns: Vec<String>,
    /// Files never looked at (e.g. the output file of the session when it lies in the folder).
    /// Compared by folder (canonicalised) and file name, so the file need not exist yet.
    pub exclude: Vec<PathBuf>,
    /// Use `notify`'s polling watcher instead of file events (network shares deliver no events).
    pub poll: bool,
    /// Interval of the polling watcher (only with `poll`; default 2 s).
    pub poll_interval: Duration,
    /// How long size, time stamp and inode must stay unchanged before a file is examined
    /// (default 1 s). This is the floor of the latency from completion to [`FollowEvent::Ready`].
    pub stable_for: Duration,
    /// An incomplete file that has not changed for this long is reported and skipped (default 30 s).
    pub give_up_after: Duration,
    /// Extra examinations, `stable_for` apart, before a broken-looking file is reported (default 2).
    pub retries: u32,
    /// Interval of the safety-net listing of the folder (default 5 s).
    pub rescan_interval: Duration,
    /// Reject frames without a single finite pixel (default true; reads pixels until the first
    /// finite one, usually one small band).
    pub check_pixels: bool,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            patterns: scan::DEFAULT_PATTERNS
                .iter()
                .map(|p| p.to_string())
                .collect(),
            exclude: Vec::new(),
            poll: false,
            poll_interval: Duration::from_secs(2),
            stable_for: Duration::from_secs(1),
            give_up_after: Duration::from_secs(30),
            retries: 2,
            rescan_interval: Duration::from_secs(5),
            check_pixels: true,
        }
    }
}

/// What [`Follower::next`] reports.
// One event is moved per frame (a few per second at most): boxing the header would only add an
// allocation and a deref for every consumer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum FollowEvent {
    /// A complete frame, handed out once. Its header was read after the file stopped changing.
    Ready(FrameHeader),
    /// A file that is not used, reported once per reason (see the module docs).
    Skipped {
        /// The file.
        path: PathBuf,
        /// Why (a user-facing sentence naming the file).
        reason: String,
    },
}

/// Errors of the folder follower. Every variant names the folder. They are not fatal: the
/// follower stays usable and the next call of [`Follower::next`] tries again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    /// The folder is missing, not a folder, or cannot be listed.
    #[error("following folder `{dir}`: cannot list it")]
    Folder {
        /// The folder.
        dir: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file watcher could not be started (e.g. the inotify watch limit is reached).
    #[error("following folder `{dir}`: cannot watch it for changes (the polling watcher does not need file events)")]
    Watch {
        /// The folder.
        dir: PathBuf,
        /// `notify`'s error.
        #[source]
        source: notify::Error,
    },
    /// An invalid file pattern (the scan error names the folder and the pattern).
    #[error(transparent)]
    Pattern(#[from] ScanError),
    /// An option is out of range.
    #[error("following folder `{dir}`: {reason}")]
    Options {
        /// The folder.
        dir: PathBuf,
        /// Which option and why.
        reason: String,
    },
}

/// Messages from `notify`'s callback thread: when the event arrived, and the event.
type Message = (Instant, notify::Result<Event>);

/// Follows one folder; see the module docs for the policy.
///
/// Not tied to a thread: it may be moved to the thread that consumes the frames.
///
/// ```no_run
/// use std::path::Path;
/// use std::time::Duration;
/// use tlr::source::follow::{FollowEvent, FollowOptions, Follower};
///
/// # fn main() -> Result<(), tlr::source::follow::FollowError> {
/// let mut follower = Follower::new(Path::new("/data/lights"), FollowOptions::default())?;
/// follower.mark_seen(["light_0001.fits", "light_0002.fits"]); // used by an earlier session
/// // Stop after one minute without news (a real session also stops on Ctrl-C).
/// while let Some(event) = follower.next(Duration::from_secs(60))? {
///     match event {
///         FollowEvent::Ready(header) => println!("frame {}", header.path.display()),
///         FollowEvent::Skipped { reason, .. } => eprintln!("skipped: {reason}"),
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct Follower {
    dir: PathBuf,
    options: FollowOptions,
    /// The folder as given, made absolute, and canonical: how watchers may spell it.
    dir_spellings: Vec<PathBuf>,
    names: NameFilter,
    excluded: BTreeSet<OsString>,
    /// Every file name ever seen that passes the name rules, with its state.
    entries: BTreeMap<OsString, State>,
    /// Events ready to be returned; `Ready` entries are verified once more when popped.
    out: VecDeque<FollowEvent>,
    /// Frames of the first batch found complete; released sorted when the batch is decided.
    initial_batch: Vec<FrameHeader>,
    initial_open: bool,
    /// When the follower started: files that change later are not part of the first batch.
    started: Instant,
    rx: Receiver<Message>,
    overflow: Arc<AtomicBool>,
    watcher_lost: bool,
    rescan_requested: bool,
    next_rescan: Instant,
    /// Kept alive: dropping it stops the watcher thread.
    _watcher: Box<dyn Watcher + Send>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("files", &self.entries.len())
            .field("backlog", &self.backlog())
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// Starts following `dir`: starts the watcher, then lists the files already present (they
    /// are examined by the first calls of [`Follower::next`], not here).
    ///
    /// # Errors
    /// [`FollowError::Folder`] when `dir` is missing, not a folder or cannot be listed,
    /// [`FollowError::Watch`] when the watcher cannot start, [`FollowError::Pattern`] for an
    /// invalid glob, [`FollowError::Options`] for a zero `poll_interval` or `rescan_interval`.
    pub fn new(dir: &Path, options: FollowOptions) -> Result<Self, FollowError> {
        let folder_err = |source| FollowError::Folder {
            dir: dir.to_path_buf(),
            source,
        };
        if options.rescan_interval.is_zero() || (options.poll && options.poll_interval.is_zero()) {
            return Err(FollowError::Options {
                dir: dir.to_path_buf(),
                reason: "rescan_interval and poll_interval must be longer than zero".to_string(),
            });
        }
        let names = NameFilter::new(dir, &options.patterns)?;
        let meta = fs::metadata(dir).map_err(folder_err)?;
        if !meta.is_dir() {
            return Err(folder_err(io::Error::other("it is not a folder")));
        }
        let excluded = excluded_names(dir, &options.exclude);

        // The watcher starts before the listing, so a file created in between is not missed
        // (it is then both listed and reported by an event, which is harmless).
        let (tx, rx) = crossbeam_channel::bounded::<Message>(EVENT_CAPACITY);
        let overflow = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&overflow);
        let handler = move |res: notify::Result<Event>| {
            // Never block notify's thread: a full channel is replaced by a rescan.
            if tx.try_send((Instant::now(), res)).is_err() {
                flag.store(true, AtomicOrdering::Relaxed);
            }
        };
        let watch_err = |source| FollowError::Watch {
            dir: dir.to_path_buf(),
            source,
        };
        let mut watcher: Box<dyn Watcher + Send> = if options.poll {
            let config = notify::Config::default().with_poll_interval(options.poll_interval);
            Box::new(notify::PollWatcher::new(handler, config).map_err(watch_err)?)
        } else {
            Box::new(
                notify::RecommendedWatcher::new(handler, notify::Config::default())
                    .map_err(watch_err)?,
            )
        };
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(watch_err)?;

        let mut dir_spellings = vec![dir.to_path_buf()];
        dir_spellings.extend(std::env::current_dir().ok().map(|cwd| cwd.join(dir)));
        dir_spellings.extend(fs::canonicalize(dir).ok());

        let now = Instant::now();
        let mut follower = Self {
            dir: dir.to_path_buf(),
            dir_spellings,
            next_rescan: now + options.rescan_interval,
            options,
            names,
            excluded,
            entries: BTreeMap::new(),
            out: VecDeque::new(),
            initial_batch: Vec::new(),
            initial_open: true,
            started: now,
            rx,
            overflow,
            watcher_lost: false,
            rescan_requested: false,
            _watcher: watcher,
        };
        for name in follower.list()? {
            follower.touch(name, None, now);
        }
        for state in follower.entries.values_mut() {
            if let State::Pending(p) = state {
                p.initial = true;
            }
        }
        Ok(follower)
    }

    /// The folder being followed, as given to [`Follower::new`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files seen that are neither handed out nor skipped yet (being written, waiting to be
    /// examined, or examined and waiting to be handed out). A backlog that keeps growing means
    /// frames arrive faster than they are consumed.
    pub fn backlog(&self) -> usize {
        self.entries
            .values()
            .filter(|s| matches!(s, State::Pending(_) | State::Queued { .. }))
            .count()
    }

    /// Marks files as already used (e.g. from a checkpoint of an earlier session), so that they
    /// are never handed out. Only the file name counts (the folder is this follower's); names
    /// not present yet are remembered too. Works at any time, also for frames already examined
    /// but not yet handed out.
    pub fn mark_seen<I, P>(&mut self, paths: I)
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        for path in paths {
            let Some(name) = path.as_ref().file_name() else {
                continue;
            };
            let sig = fs::metadata(self.dir.join(name))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| Sig::of(&m));
            self.entries.insert(
                name.to_os_string(),
                State::Used {
                    sig,
                    change_reported: false,
                },
            );
        }
        // Frames of the first batch found complete before this call must not be released.
        let entries = &self.entries;
        self.initial_batch.retain(|h| {
            h.path
                .file_name()
                .is_some_and(|n| matches!(entries.get(n), Some(State::Queued { .. })))
        });
    }

    /// The next event, waiting up to `timeout` for one; `Ok(None)` when none came in time.
    ///
    /// The frames present at start come first, in scan order, once all of them are decided (a
    /// file still being written at start, or changing after it, joins the later frames); then
    /// new frames in the order they complete (frames completing together are put in scan
    /// order). A call examines files only when it has nothing to return, and stops examining
    /// at `timeout`: a large first batch may take several calls.
    ///
    /// # Errors
    /// [`FollowError::Folder`] when the folder cannot be listed any more (e.g. it was removed);
    /// every later call tries again.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<FollowEvent>, FollowError> {
        let start = Instant::now();
        let deadline = start
            .checked_add(timeout)
            .unwrap_or(start + Duration::from_secs(86_400 * 365));
        loop {
            self.drain_events();
            let now = Instant::now();
            if self.rescan_requested || now >= self.next_rescan {
                self.rescan(now)?;
            }
            if self.out.is_empty() {
                self.run_due(deadline);
            }
            if let Some(event) = self.pop_event() {
                return Ok(Some(event));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if !self.out.is_empty() {
                continue;
            }
            let mut wake = deadline.min(self.next_rescan);
            if let Some(due) = self.earliest_due() {
                wake = wake.min(due);
            }
            if wake > now {
                self.wait_event(wake - now);
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Events and listing
    // ---------------------------------------------------------------------------------------

    /// True when a file name is looked at at all (patterns, hidden, temporary, excluded).
    fn wanted(&self, name: &OsStr) -> bool {
        self.names.is_candidate(name) && !is_temporary(name) && !self.excluded.contains(name)
    }

    fn list(&self) -> Result<Vec<OsString>, FollowError> {
        let folder_err = |source| FollowError::Folder {
            dir: self.dir.clone(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(folder_err)? {
            let name = entry.map_err(folder_err)?.file_name();
            if self.wanted(&name) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn rescan(&mut self, now: Instant) -> Result<(), FollowError> {
        // Stays requested on failure: every call reports the error until the folder is back.
        self.rescan_requested = true;
        self.next_rescan = now + self.options.rescan_interval;
        let listed = self.list()?;
        self.rescan_requested = false;
        let present: BTreeSet<&OsString> = listed.iter().collect();
        // Gone files: forget undecided and skipped ones (used ones stay used; queued ones are
        // reported when popped).
        self.entries.retain(|name, state| {
            present.contains(name) || matches!(state, State::Used { .. } | State::Queued { .. })
        });
        for name in listed {
            self.touch(name, None, now);
        }
        Ok(())
    }

    fn drain_events(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(message) => self.handle_message(message),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.watcher_lost = true;
                    break;
                }
            }
        }
        if self.overflow.swap(false, AtomicOrdering::Relaxed) {
            self.rescan_requested = true;
        }
    }

    fn wait_event(&mut self, timeout: Duration) {
        if self.watcher_lost {
            // Only the periodic rescan is left: sleep instead of spinning on a dead channel.
            std::thread::sleep(timeout);
            return;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(message) => self.handle_message(message),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => self.watcher_lost = true,
        }
    }

    fn handle_message(&mut self, (at, result): Message) {
        let event = match result {
            Ok(event) => event,
            Err(_) => {
                // A watcher error says nothing reliable about single files: list the folder.
                self.rescan_requested = true;
                return;
            }
        };
        if event.need_rescan() {
            self.rescan_requested = true;
        }
        // Reads (ours and the pipeline's) must not count as changes; close-after-write does.
        if matches!(event.kind, EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write))
        {
            return;
        }
        let now = Instant::now();
        for path in &event.paths {
            // The watch is not recursive, so a path is the folder itself or one of its files.
            // Watchers respell the folder (inotify makes it absolute, FSEvents canonical), so
            // the folder is recognised by any of its spellings and a file by its name.
            match path.file_name() {
                Some(name) if !self.dir_spellings.iter().any(|d| d == path) => {
                    self.touch(name.to_os_string(), Some(at), now);
                }
                // The folder itself (e.g. removed): find out by listing it.
                _ => self.rescan_requested = true,
            }
        }
        if event.paths.is_empty() {
            self.rescan_requested = true;
        }
    }
}

/// Names in `dir` that `exclude` designates (compared by canonical folder and file name).
fn excluded_names(dir: &Path, exclude: &[PathBuf]) -> BTreeSet<OsString> {
    let canonical = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let dir_c = canonical(dir);
    exclude
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?;
            let parent = match p.parent() {
                Some(parent) if parent != Path::new("") => parent.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (canonical(&parent) == dir_c).then(|| name.to_os_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusion_by_folder_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let names = excluded_names(
            dir.path(),
            &[
                dir.path().join("out.fits"),
                dir.path().join(".").join("later.fits"),
                other.path().join("x.fits"),
            ],
        );
        let names: Vec<_> = names.into_iter().collect();
        assert_eq!(
            names,
            vec![OsString::from("later.fits"), OsString::from("out.fits")]
        );
    }

    #[test]
    fn follower_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Follower>();
    }
}
