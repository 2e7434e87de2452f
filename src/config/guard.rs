//! # Hostile-input bounds for configuration text, checked before the YAML is deserialised
//!
//! What it does: one streaming pass of libyaml's event parser (the parser `serde_norway` itself uses)
//! over the text, stopping at the first limit it crosses:
//! - [`MAX_BYTES`]: the text is at most 1 MiB (the largest shipped configuration is 6 KB);
//! - [`MAX_DEPTH`]: at most 64 nested sequences or mappings, flow (`[`, `{`) or block (indentation)
//!   alike, since both are the same events;
//! - [`MAX_VALUES`]: at most 100 000 values (scalars, sequences, mappings) once every alias is
//!   expanded, which stops "billion laughs" documents (`&a [x, x]`, `&b [*a, *a]`, ...) before any
//!   expansion happens: each anchor's expanded size is known when its node ends, and an alias adds it.
//!
//! Why a pass of its own: `serde_norway` collects all events of a document before its deserialiser
//! applies its own recursion limit (128), and libyaml's scanner checks every open flow level on every
//! token (its stack of possible simple keys), so 100 000 nested `{a: ` took 33 s before the error.
//! Streaming the events and stopping at level 65 keeps the pass linear in the text; the deserialiser
//! then only ever sees bounded documents, and it expands aliases within [`MAX_VALUES`].
//!
//! What it does not do: report YAML syntax errors (a syntax error ends the pass without a verdict, and
//! the deserialiser reports it with its usual message) or check any key or value.

use std::collections::HashMap;
use std::ffi::CStr;
use std::mem::MaybeUninit;

use unsafe_libyaml_norway as unsafe_libyaml;

/// Largest configuration text accepted, in bytes.
pub const MAX_BYTES: usize = 1 << 20;

/// Deepest nesting of sequences and mappings accepted (a tlr configuration needs 3).
pub const MAX_DEPTH: usize = 64;

/// Most values a document may hold once its aliases are expanded (a tlr configuration has about 100).
pub const MAX_VALUES: u64 = 100_000;

/// Why a text was refused, and where (1-based; none for the size limit).
#[derive(Debug)]
pub(super) struct Rejection {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub reason: String,
}

/// Checks `text` against [`MAX_BYTES`], [`MAX_DEPTH`] and [`MAX_VALUES`]. A YAML syntax error is not a
/// rejection here (the caller's parser reports it).
pub(super) fn check(text: &str) -> Result<(), Rejection> {
    if text.len() > MAX_BYTES {
        return Err(too_large(text.len() as u64));
    }
    let mut events = Events::new(text.as_bytes());
    // Expanded size of each finished anchor of the current document.
    let mut anchors: HashMap<Vec<u8>, u64> = HashMap::new();
    // Open collections: their anchor and the value count when they started.
    let mut open: Vec<(Option<Vec<u8>>, u64)> = Vec::new();
    let mut values: u64 = 0;
    while let Some(event) = events.next() {
        let at = |reason: String| Rejection {
            line: Some(event.line),
            column: Some(event.column),
            reason,
        };
        match event.kind {
            Kind::DocumentStart => anchors.clear(),
            Kind::StreamEnd => break,
            Kind::Scalar(anchor) => {
                values += 1;
                if let Some(name) = anchor {
                    anchors.insert(name, 1);
                }
            }
            Kind::Start(anchor) => {
                values += 1;
                if open.len() == MAX_DEPTH {
                    return Err(at(format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                open.push((anchor, values - 1));
            }
            Kind::End => {
                if let Some((Some(name), start)) = open.pop() {
                    anchors.insert(name, values - start);
                }
            }
            // An unknown (or still open, i.e. recursive) anchor is the deserialiser's error to report.
            Kind::Alias(name) => values += anchors.get(&name).copied().unwrap_or(1),
            Kind::Other => {}
        }
        if values > MAX_VALUES {
            return Err(at(format!(
                "more than {MAX_VALUES} values once aliases are expanded (a tlr configuration has \
                 about 100; anchors and aliases that multiply, a \"billion laughs\" document?)"
            )));
        }
    }
    Ok(())
}

/// The rejection of a text or file of `bytes` bytes (more than [`MAX_BYTES`]).
pub(super) fn too_large(bytes: u64) -> Rejection {
    Rejection {
        line: None,
        column: None,
        reason: format!(
            "{bytes} bytes is more than the {MAX_BYTES}-byte limit for a configuration (tlr's are \
             a few KB)"
        ),
    }
}

/// What [`check`] needs of one libyaml event.
enum Kind {
    DocumentStart,
    StreamEnd,
    /// A scalar, with its anchor.
    Scalar(Option<Vec<u8>>),
    /// A sequence or mapping starts, with its anchor.
    Start(Option<Vec<u8>>),
    /// A sequence or mapping ends.
    End,
    /// An alias, with the anchor it names.
    Alias(Vec<u8>),
    Other,
}

/// One event and its 1-based start position.
struct Event {
    kind: Kind,
    line: usize,
    column: usize,
}

/// libyaml's event parser over a borrowed text; `None` after the stream ends or at a syntax error.
struct Events<'a> {
    parser: Box<MaybeUninit<unsafe_libyaml::yaml_parser_t>>,
    /// The text the parser reads from (it keeps a pointer into it).
    _input: &'a [u8],
    done: bool,
}

impl<'a> Events<'a> {
    fn new(input: &'a [u8]) -> Self {
        let mut parser = Box::new(MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
        // SAFETY: `yaml_parser_initialize` zeroes, then fills the boxed (so never moved) parser; if it
        // failed, `done` makes `next` return `None` and `drop` deletes the zeroed parser. The input
        // slice outlives the parser (`'a`), as `yaml_parser_set_input_string` requires.
        let done = unsafe {
            let p = parser.as_mut_ptr();
            if unsafe_libyaml::yaml_parser_initialize(p).fail {
                true
            } else {
                unsafe_libyaml::yaml_parser_set_encoding(p, unsafe_libyaml::YAML_UTF8_ENCODING);
                unsafe_libyaml::yaml_parser_set_input_string(p, input.as_ptr(), input.len() as u64);
                false
            }
        };
        Self {
            parser,
            _input: input,
            done,
        }
    }

    fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        let mut event = MaybeUninit::<unsafe_libyaml::yaml_event_t>::uninit();
        // SAFETY: the parser was initialised in `new`; after a successful `yaml_parser_parse` the event
        // is initialised, its anchor pointers are null or NUL-terminated strings owned by the event,
        // read before `yaml_event_delete` frees them.
        unsafe {
            let p = self.parser.as_mut_ptr();
            if unsafe_libyaml::yaml_parser_parse(p, event.as_mut_ptr()).fail {
                self.done = true;
                return None;
            }
            let e = event.as_mut_ptr();
            let anchor = |ptr: *const u8| {
                (!ptr.is_null()).then(|| CStr::from_ptr(ptr.cast()).to_bytes().to_vec())
            };
            let kind = match (*e).type_ {
                unsafe_libyaml::YAML_DOCUMENT_START_EVENT => Kind::DocumentStart,
                unsafe_libyaml::YAML_STREAM_END_EVENT => Kind::StreamEnd,
                unsafe_libyaml::YAML_SCALAR_EVENT => Kind::Scalar(anchor((*e).data.scalar.anchor)),
                unsafe_libyaml::YAML_SEQUENCE_START_EVENT => {
                    Kind::Start(anchor((*e).data.sequence_start.anchor))
                }
                unsafe_libyaml::YAML_MAPPING_START_EVENT => {
                    Kind::Start(anchor((*e).data.mapping_start.anchor))
                }
                unsafe_libyaml::YAML_SEQUENCE_END_EVENT
                | unsafe_libyaml::YAML_MAPPING_END_EVENT => Kind::End,
                unsafe_libyaml::YAML_ALIAS_EVENT => {
                    Kind::Alias(anchor((*e).data.alias.anchor).unwrap_or_default())
                }
                _ => Kind::Other,
            };
            let mark = (*e).start_mark;
            unsafe_libyaml::yaml_event_delete(e);
            if matches!(kind, Kind::StreamEnd) {
                self.done = true;
            }
            Some(Event {
                kind,
                line: mark.line as usize + 1,
                column: mark.column as usize + 1,
            })
        }
    }
}

impl Drop for Events<'_> {
    fn drop(&mut self) {
        // SAFETY: `new` initialised (at least zeroed) the parser, and it is deleted once.
        unsafe { unsafe_libyaml::yaml_parser_delete(self.parser.as_mut_ptr()) }
    }
}
