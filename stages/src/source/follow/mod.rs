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
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};

use tlr_core::fits::{self, FitsError, FitsReader, FrameHeader};
use tlr_core::scan::{self, NameFilter, ScanError};

/// File name endings of temporary files, compared case-insensitively; never frames.
pub const TEMP_SUFFIXES: &[&str] = &[
    ".tmp",
    ".temp",
    ".part",
    ".partial",
    ".crdownload",
    ".swp",
    "~",
];

/// Capacity of the channel between `notify`'s callback thread and the follower. When it is full
/// the callback drops the event and asks for a rescan instead of blocking.
const EVENT_CAPACITY: usize = 8192;
/// Extra age an mtime must have before a file counts as quiet without waiting (FAT stores times
/// in 2 s steps).
const MTIME_GRANULARITY: Duration = Duration::from_secs(2);
/// Shortest interval between two examinations of one file.
const MIN_RECHECK: Duration = Duration::from_millis(20);
/// Pixels read per band while looking for a finite value.
const PIXEL_BAND: usize = 1 << 16;
/// Length of one FITS block.
const FITS_BLOCK: u64 = 2880;
/// How a FITS file starts.
const FITS_SIGNATURE: &[u8] = b"SIMPLE  = ";

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

/// What identifies one version of a file's content, cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sig {
    len: u64,
    mtime: Option<SystemTime>,
    inode: u64,
}

impl Sig {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            len: meta.len(),
            mtime: meta.modified().ok(),
            inode,
        }
    }
}

/// A file seen but not decided yet.
#[derive(Debug, Clone)]
struct Pending {
    /// Last observed signature (`None` before the first successful `stat`).
    sig: Option<Sig>,
    /// When the file was last seen changing (latest event or observed change).
    since: Instant,
    /// When to examine it next.
    due: Instant,
    /// Broken verdicts in a row while quiet.
    broken: u32,
    /// Present when the follower started and not yet decided: part of the first batch.
    initial: bool,
}

#[derive(Debug, Clone)]
enum State {
    /// Seen, not decided.
    Pending(Pending),
    /// Complete; its header waits in the output queue.
    Queued { sig: Sig },
    /// Handed out or marked seen: never handed out again.
    Used {
        sig: Option<Sig>,
        change_reported: bool,
    },
    /// Reported as skipped; looked at again only if it changes.
    Skipped { sig: Option<Sig> },
    /// Ignored silently (own output, sub-folder); looked at again only if it changes.
    Ignored { sig: Option<Sig> },
}

/// What an examination found.
enum Examined {
    Frame(Box<FrameHeader>),
    OwnOutput,
}

/// Why a file cannot be used yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trouble {
    /// May still be written: retried until `give_up_after` without change.
    Incomplete,
    /// Looks broken: reported after `retries` + 1 examinations.
    Broken,
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

    /// Records that `name` may have changed: `at` is the time of a change event (`None` when the
    /// file was only listed).
    fn touch(&mut self, name: OsString, at: Option<Instant>, now: Instant) {
        if !self.wanted(&name) {
            return;
        }
        let meta = fs::metadata(self.dir.join(&name));
        let stable_for = self.options.stable_for;
        match self.entries.get_mut(&name) {
            None => {
                let Ok(meta) = meta else { return };
                let state = if meta.is_file() {
                    let sig = Sig::of(&meta);
                    State::Pending(Pending {
                        sig: Some(sig),
                        since: at.unwrap_or(now),
                        due: now,
                        broken: 0,
                        initial: false,
                    })
                } else {
                    State::Ignored { sig: None }
                };
                self.entries.insert(name, state);
            }
            Some(State::Pending(p)) => match meta {
                Ok(meta) => {
                    let sig = Sig::of(&meta);
                    let changed = p.sig != Some(sig);
                    if changed {
                        p.sig = Some(sig);
                        p.since = at.unwrap_or(now);
                        p.broken = 0;
                    }
                    if let Some(at) = at {
                        // A change event: the file changed at (or just before) `at`.
                        p.since = p.since.max(at);
                    }
                    if changed || at.is_some() {
                        // Debounce: examine it only once it has been quiet for `stable_for`.
                        p.due = p.since + stable_for;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let initial = p.initial;
                    self.entries.remove(&name);
                    if initial {
                        self.close_initial_if_done();
                    }
                }
                Err(_) => p.due = p.due.min(now),
            },
            Some(State::Queued { .. }) => {} // verified when handed out
            Some(State::Used {
                sig,
                change_reported,
            }) => {
                if let Ok(meta) = meta {
                    let new = Sig::of(&meta);
                    match sig {
                        None => *sig = Some(new),
                        Some(old) if *old != new && !*change_reported => {
                            *change_reported = true;
                            let path = self.dir.join(&name);
                            self.out.push_back(FollowEvent::Skipped {
                                reason: format!(
                                    "frame `{}`: changed on disk after it was used; the new content is not used (every file is used once)",
                                    path.display()
                                ),
                                path,
                            });
                        }
                        Some(_) => {}
                    }
                }
            }
            Some(State::Skipped { sig } | State::Ignored { sig }) => match meta {
                Ok(meta) => {
                    let new = Sig::of(&meta);
                    if sig.is_some_and(|old| old != new) && meta.is_file() {
                        // Changed since it was set aside: a new file under an old name.
                        self.entries.insert(
                            name,
                            State::Pending(Pending {
                                sig: Some(new),
                                since: at.unwrap_or(now),
                                due: now,
                                broken: 0,
                                initial: false,
                            }),
                        );
                    } else if sig.is_none() {
                        *sig = Some(new);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.entries.remove(&name);
                }
                Err(_) => {}
            },
        }
    }

    // ---------------------------------------------------------------------------------------
    // Examination
    // ---------------------------------------------------------------------------------------

    /// Whether a pending entry may be examined now (during the first batch, only its files).
    fn eligible(&self, p: &Pending) -> bool {
        !self.initial_open || p.initial
    }

    fn earliest_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|s| match s {
                State::Pending(p) if self.eligible(p) => Some(p.due),
                _ => None,
            })
            .min()
    }

    /// Examines every due file (at least one, then until `deadline`); frames found complete in
    /// this round are queued in scan order.
    fn run_due(&mut self, deadline: Instant) {
        let now = Instant::now();
        let mut due: Vec<(Instant, OsString)> = self
            .entries
            .iter()
            .filter_map(|(name, s)| match s {
                State::Pending(p) if self.eligible(p) && p.due <= now => {
                    Some((p.due, name.clone()))
                }
                _ => None,
            })
            .collect();
        due.sort();
        let mut round = Vec::new();
        for (i, (_, name)) in due.into_iter().enumerate() {
            if i > 0 && Instant::now() >= deadline {
                break;
            }
            if let Some(header) = self.check(&name) {
                round.push(header);
            }
        }
        if self.initial_open {
            self.initial_batch.append(&mut round);
            self.close_initial_if_done();
        } else {
            scan::sort_frames(&mut round);
            self.out.extend(round.into_iter().map(FollowEvent::Ready));
        }
    }

    /// Ends the first batch once none of its files is undecided: releases it in scan order.
    fn close_initial_if_done(&mut self) {
        if !self.initial_open {
            return;
        }
        let open = self
            .entries
            .values()
            .any(|s| matches!(s, State::Pending(p) if p.initial));
        if open {
            return;
        }
        self.initial_open = false;
        let mut batch = std::mem::take(&mut self.initial_batch);
        scan::sort_frames(&mut batch);
        self.out.extend(batch.into_iter().map(FollowEvent::Ready));
    }

    /// Examines one pending file; returns its header when it is complete.
    fn check(&mut self, name: &OsStr) -> Option<FrameHeader> {
        let path = self.dir.join(name);
        let now = Instant::now();
        let opts = Limits::of(&self.options);
        let recheck = opts.stable_for.max(MIN_RECHECK);
        let started = self.started;
        let Some(State::Pending(p)) = self.entries.get_mut(name) else {
            return None;
        };

        let meta = match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(meta) => {
                let sig = Some(Sig::of(&meta));
                self.entries
                    .insert(name.to_os_string(), State::Ignored { sig });
                return None;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.entries.remove(name);
                return None;
            }
            Err(e) => {
                // Cannot even stat it (permissions, network share): like an incomplete file.
                p.initial = false;
                if now.duration_since(p.since) >= opts.give_up_after {
                    let reason = format!(
                        "frame `{}`: cannot read it: {e}; gave up after {:.1} s",
                        path.display(),
                        opts.give_up_after.as_secs_f64()
                    );
                    self.skip(name, path, None, reason);
                } else {
                    p.due = now + recheck;
                }
                return None;
            }
        };
        let sig = Sig::of(&meta);
        if p.sig != Some(sig) {
            p.sig = Some(sig);
            p.since = now;
            p.broken = 0;
        }
        // How long it has been unchanged: by our own observation, or (without `poll`) by its
        // time stamp, so a stale file found at start need not be watched for the full time.
        let mtime_age = match (opts.poll, sig.mtime) {
            (false, Some(m)) => SystemTime::now()
                .duration_since(m)
                .map_or(Duration::ZERO, |age| age.saturating_sub(MTIME_GRANULARITY)),
            _ => Duration::ZERO,
        };
        let unchanged_for = now.duration_since(p.since).max(mtime_age);
        let quiet = unchanged_for >= opts.stable_for;
        if !quiet {
            if p.initial && (p.since > started || matches!(peek(&path), Some(Trouble::Incomplete)))
            {
                // Changed since the start, or still being written: it joins the later frames
                // instead of holding the first batch.
                p.initial = false;
            }
            p.due = p.since + opts.stable_for;
            return None;
        }

        match examine(&path, opts.check_pixels) {
            Ok(Examined::Frame(header)) => {
                // Unchanged while it was read? Otherwise wait again.
                match fs::metadata(&path) {
                    Ok(m) if Sig::of(&m) == sig => {
                        self.entries
                            .insert(name.to_os_string(), State::Queued { sig });
                        Some(*header)
                    }
                    _ => {
                        p.since = now;
                        p.due = now + recheck;
                        None
                    }
                }
            }
            Ok(Examined::OwnOutput) => {
                self.entries
                    .insert(name.to_os_string(), State::Ignored { sig: Some(sig) });
                None
            }
            Err(e) => {
                p.initial = false;
                match classify(&e, &path) {
                    Trouble::Incomplete => {
                        if unchanged_for >= opts.give_up_after {
                            let reason = format!(
                                "{}; unchanged for {:.1} s, so it is skipped (looked at again if it changes)",
                                tlr_core::report(&e),
                                unchanged_for.as_secs_f64()
                            );
                            self.skip(name, path, Some(sig), reason);
                        } else {
                            p.due = now + recheck;
                        }
                    }
                    Trouble::Broken => {
                        p.broken += 1;
                        if p.broken > opts.retries {
                            self.skip(name, path, Some(sig), tlr_core::report(&e));
                        } else {
                            p.due = now + recheck;
                        }
                    }
                }
                None
            }
        }
    }

    fn skip(&mut self, name: &OsStr, path: PathBuf, sig: Option<Sig>, reason: String) {
        self.entries
            .insert(name.to_os_string(), State::Skipped { sig });
        self.out.push_back(FollowEvent::Skipped { path, reason });
    }

    /// Pops the next event; a queued frame is verified unchanged first.
    fn pop_event(&mut self) -> Option<FollowEvent> {
        while let Some(event) = self.out.pop_front() {
            let header = match event {
                FollowEvent::Ready(header) => header,
                other => return Some(other),
            };
            let Some(name) = header.path.file_name().map(OsStr::to_os_string) else {
                continue;
            };
            let Some(State::Queued { sig }) = self.entries.get(&name) else {
                continue; // marked seen meanwhile
            };
            let sig = *sig;
            let now = Instant::now();
            match fs::metadata(&header.path) {
                Ok(meta) if Sig::of(&meta) == sig => {
                    self.entries.insert(
                        name,
                        State::Used {
                            sig: Some(sig),
                            change_reported: false,
                        },
                    );
                    return Some(FollowEvent::Ready(header));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.entries.remove(&name);
                    return Some(FollowEvent::Skipped {
                        reason: format!(
                            "frame `{}`: removed before it was used",
                            header.path.display()
                        ),
                        path: header.path,
                    });
                }
                other => {
                    // Changed (or unreadable) since it was examined: examine it again later.
                    let sig = other.ok().map(|m| Sig::of(&m));
                    let pending = Pending {
                        sig,
                        since: now,
                        due: now + self.options.stable_for,
                        broken: 0,
                        initial: false,
                    };
                    self.entries.insert(name, State::Pending(pending));
                }
            }
        }
        None
    }
}

/// The options [`Follower::check`] needs, copied out so the entry can stay borrowed.
#[derive(Clone, Copy)]
struct Limits {
    stable_for: Duration,
    give_up_after: Duration,
    retries: u32,
    poll: bool,
    check_pixels: bool,
}

impl Limits {
    fn of(o: &FollowOptions) -> Self {
        Self {
            stable_for: o.stable_for,
            give_up_after: o.give_up_after,
            retries: o.retries,
            poll: o.poll,
            check_pixels: o.check_pixels,
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

/// True for names of temporary files (see [`TEMP_SUFFIXES`]).
fn is_temporary(name: &OsStr) -> bool {
    let lower = name.to_string_lossy().to_lowercase();
    TEMP_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

/// Reads the header (completeness checks included) and, if asked, looks for one finite pixel.
fn examine(path: &Path, check_pixels: bool) -> Result<Examined, FitsError> {
    let mut reader = FitsReader::open(path)?;
    let header = reader.header().clone();
    if header.creator.as_deref().is_some_and(fits::is_own_output) {
        return Ok(Examined::OwnOutput);
    }
    if check_pixels {
        let band = (PIXEL_BAND / header.cols.max(1)).max(1);
        let mut row = 0;
        let mut finite = false;
        while row < header.rows && !finite {
            let end = (row + band).min(header.rows);
            finite = reader
                .read_region(row..end, 0..header.cols)?
                .iter()
                .any(|v| v.is_finite());
            row = end;
        }
        if !finite {
            return Err(FitsError::NoFiniteData {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(Examined::Frame(Box::new(header)))
}

/// The header checks alone, for a file that is still changing: `None` when it looks complete.
fn peek(path: &Path) -> Option<Trouble> {
    fits::read_header_cards(path)
        .err()
        .map(|e| classify(&e, path))
}

/// Sorts a failed examination into "may still be written" and "broken".
fn classify(error: &FitsError, path: &Path) -> Trouble {
    match error {
        FitsError::Empty { .. }
        | FitsError::HeaderTruncated { .. }
        | FitsError::Truncated { .. }
        | FitsError::Unpadded { .. }
        | FitsError::Io { .. } => Trouble::Incomplete,
        FitsError::NotFits { .. } if starts_like_fits(path) => Trouble::Incomplete,
        _ => Trouble::Broken,
    }
}

/// True for a file shorter than one FITS block whose bytes so far are the start of a FITS
/// signature: the fits module calls it "not FITS", but it may be a frame being written.
fn starts_like_fits(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::new();
    if file.take(FITS_BLOCK).read_to_end(&mut head).is_err() || head.len() as u64 >= FITS_BLOCK {
        return false;
    }
    let n = head.len().min(FITS_SIGNATURE.len());
    head[..n] == FITS_SIGNATURE[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names() {
        for name in [
            "a.fits.tmp",
            "a.FITS.PART",
            "a.fits~",
            "a.fits.partial",
            "x.crdownload",
        ] {
            assert!(is_temporary(OsStr::new(name)), "{name}");
        }
        for name in ["a.fits", "a.fit", "tmp.fits", "a.part.fits"] {
            assert!(!is_temporary(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn short_fits_prefix_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("a.fits");
        fs::write(&partial, b"SIMPLE  =   ").unwrap();
        let err = fits::read_header(&partial).unwrap_err();
        assert_eq!(classify(&err, &partial), Trouble::Incomplete, "{err}");
        fs::write(&partial, b"SIM").unwrap();
        let err = fits::read_header(&partial).unwrap_err();
        assert_eq!(classify(&err, &partial), Trouble::Incomplete, "{err}");
        let text = dir.path().join("b.fits");
        fs::write(&text, b"this is a note, not a frame\n").unwrap();
        let err = fits::read_header(&text).unwrap_err();
        assert_eq!(classify(&err, &text), Trouble::Broken, "{err}");
        let empty = dir.path().join("c.fits");
        fs::write(&empty, b"").unwrap();
        let err = fits::read_header(&empty).unwrap_err();
        assert_eq!(classify(&err, &empty), Trouble::Incomplete, "{err}");
    }

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
