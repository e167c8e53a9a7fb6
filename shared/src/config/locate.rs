//! Locating problems: a key's path, the line it is on in the TOML source, and
//! a [`Problem`] that reads `file:line: key: reason`, so that errors found
//! after deserializing can still point at `file:line`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use toml::de::{DeTable, DeValue};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, when it could be located.
    pub line: Option<usize>,
    /// The key concerned (`routes[1].upstream`), empty for syntax errors.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index (0-based).
    Index(usize),
}

/// A path to a value in the config file, such as `routes[1].upstream`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// This path extended by a table key.
    pub fn key(&self, key: &str) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        KeyPath(segs)
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        KeyPath(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A config file's text, kept with the config loaded from it: problems
/// found later (the master's start checks) are located on their line
/// without reading the file again, which may have changed or gone since.
///
/// The text is parsed once, at the first problem located, into a
/// [`KeyIndex`] that every later problem reuses: a file with thousands of
/// problems must not be parsed thousands of times (a reload runs on the
/// master's loop, which also watches the workers' heartbeats).
#[derive(Clone)]
pub struct Locator {
    file: PathBuf,
    source: String,
    /// Built at the first problem located; `None` if the text does not parse.
    index: OnceLock<Option<KeyIndex>>,
}

impl fmt::Debug for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locator")
            .field("file", &self.file)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Locator {
    /// The text `source` of the config file `file`.
    pub fn new(file: &Path, source: String) -> Self {
        Locator {
            file: file.to_owned(),
            source,
            index: OnceLock::new(),
        }
    }

    /// The config file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The text it was read as.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// A problem with the value at `key`, located on its line (or the line
    /// of its deepest ancestor in the file; none if no part of it is there).
    pub fn problem(&self, key: &KeyPath, message: impl Into<String>) -> Problem {
        let index = self.index.get_or_init(|| KeyIndex::new(&self.source));
        Problem {
            file: self.file.clone(),
            line: index.as_ref().and_then(|index| index.line_of(key)),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// The problem a TOML syntax or type error is, located on its line and,
    /// where the error is inside a value or names a key, with that key.
    pub fn parse_error(&self, e: &toml::de::Error) -> Problem {
        let source = self.source.as_str();
        Problem {
            file: self.file.clone(),
            line: e.span().map(|s| line_at(source, s.start)),
            key: e
                .span()
                .and_then(|s| key_at(source, s.start).or_else(|| duplicate_key_at(source, s)))
                .map(|k| k.to_string())
                .unwrap_or_default(),
            message: e.message().trim().to_owned(),
        }
    }
}

/// The line on which each value of a config file starts, by key path: what
/// locating a problem needs of the parsed TOML, built in one parse.
#[derive(Debug, Clone)]
struct KeyIndex {
    /// The top-level table's values (the table itself has no line).
    root: Children,
}

/// A value of the file: its line and, for a table or an array, what it holds.
#[derive(Debug, Clone)]
struct Node {
    /// The 1-based line on which the value starts.
    line: usize,
    children: Children,
}

/// What a value holds.
#[derive(Debug, Clone)]
enum Children {
    /// Nothing to look into: a string, number, boolean or date.
    None,
    /// A table's values, by key.
    Table(HashMap<String, Node>),
    /// An array's values, in order.
    Array(Vec<Node>),
}

impl KeyIndex {
    /// The index of `source`, or `None` if it does not parse.
    fn new(source: &str) -> Option<KeyIndex> {
        let root = parse(source).ok()?;
        let newlines: Vec<usize> = source
            .bytes()
            .enumerate()
            .filter_map(|(i, b)| (b == b'\n').then_some(i))
            .collect();
        let root = Children::of(&DeValue::Table(root.into_inner()), Lines(&newlines));
        Some(KeyIndex { root })
    }

    /// The 1-based line on which the value at `path` starts, or the line of
    /// its deepest existing ancestor (a missing key is reported where its
    /// table is).
    fn line_of(&self, path: &KeyPath) -> Option<usize> {
        let mut current = &self.root;
        let mut line = None;
        for seg in &path.0 {
            let next = match (seg, current) {
                (Seg::Key(k), Children::Table(t)) => t.get(k.as_str()),
                (Seg::Index(n), Children::Array(a)) => a.get(*n),
                _ => None,
            };
            match next {
                Some(node) => {
                    line = Some(node.line);
                    current = &node.children;
                }
                None => break,
            }
        }
        line
    }
}

impl Children {
    /// What `value` holds, each value located with `lines`.
    fn of(value: &DeValue<'_>, lines: Lines<'_>) -> Children {
        let node = |v: &toml::Spanned<DeValue<'_>>| Node {
            line: lines.at(v.span().start),
            children: Children::of(v.get_ref(), lines),
        };
        match value {
            DeValue::Table(t) => Children::Table(
                t.iter()
                    .map(|(k, v)| (k.get_ref().to_string(), node(v)))
                    .collect(),
            ),
            DeValue::Array(a) => Children::Array(a.iter().map(node).collect()),
            _ => Children::None,
        }
    }
}

/// The offsets of a text's newlines, to find the line of an offset.
#[derive(Clone, Copy)]
struct Lines<'a>(&'a [usize]);

impl Lines<'_> {
    /// The 1-based line containing byte `offset` (as [`line_at`] counts).
    fn at(self, offset: usize) -> usize {
        self.0.partition_point(|&newline| newline < offset) + 1
    }
}

/// Parses a config file's text as TOML, keeping spans (counted in test
/// builds, to check how often a file is parsed).
fn parse(source: &str) -> Result<toml::Spanned<DeTable<'_>>, toml::de::Error> {
    #[cfg(test)]
    tests::PARSES.with(|parses| parses.set(parses.get() + 1));
    DeTable::parse(source)
}

/// The path of the innermost key whose value (or name) contains byte
/// `offset`, so that a type error from the deserializer can name its key.
fn key_at(source: &str, offset: usize) -> Option<KeyPath> {
    let root = parse(source).ok()?;
    let mut best = None;
    // Container spans do not always cover their contents (a `[table]` spans
    // its header), so every entry is visited.
    visit(
        &DeValue::Table(root.into_inner()),
        &KeyPath::default(),
        offset,
        &mut best,
    );
    best
}

fn visit(value: &DeValue<'_>, path: &KeyPath, offset: usize, best: &mut Option<KeyPath>) {
    fn consider(best: &mut Option<KeyPath>, p: &KeyPath, hit: bool) {
        if hit && best.as_ref().is_none_or(|b| p.0.len() >= b.0.len()) {
            *best = Some(p.clone());
        }
    }
    match value {
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                let p = path.key(k.get_ref());
                consider(
                    best,
                    &p,
                    k.span().contains(&offset) || v.span().contains(&offset),
                );
                visit(v.get_ref(), &p, offset, best);
            }
        }
        DeValue::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let p = path.index(i);
                consider(best, &p, v.span().contains(&offset));
                visit(v.get_ref(), &p, offset, best);
            }
        }
        _ => {}
    }
}

/// The path of the key whose name spans `span` when the parser rejected it
/// as a duplicate (the source then does not parse, so [`key_at`] finds
/// nothing): the key is renamed to a unique name and looked up again.
fn duplicate_key_at(source: &str, span: std::ops::Range<usize>) -> Option<KeyPath> {
    const PLACEHOLDER: &str = "prefork duplicate key";
    let name = source.get(span.clone())?;
    let renamed = format!(
        "{}\"{PLACEHOLDER}\"{}",
        &source[..span.start],
        &source[span.end..]
    );
    let mut path = key_at(&renamed, span.start + 1)?;
    match path.0.last_mut() {
        Some(Seg::Key(k)) if k == PLACEHOLDER => *k = name.to_owned(),
        _ => return None,
    }
    Some(path)
}

/// The 1-based line containing byte `offset`.
fn line_at(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse as validate, ConfigError};
    use std::cell::Cell;

    thread_local! {
        /// How many times this thread's tests parsed a config's text here.
        pub(super) static PARSES: Cell<usize> = const { Cell::new(0) };
    }

    fn line_of(source: &str, path: &KeyPath) -> Option<usize> {
        KeyIndex::new(source)?.line_of(path)
    }

    const SRC: &str = "workers = 2\n\n[upstreams.app]\nservers = [\"a\"]\n\n[[routes]]\npath = \"/\"\n\n[[routes]]\nhost = \"x\"\nupstream = \"nope\"\n";

    #[test]
    fn finds_nested_keys_and_array_elements() {
        let p = KeyPath::default().key("routes").index(1).key("upstream");
        assert_eq!(p.to_string(), "routes[1].upstream");
        assert_eq!(line_of(SRC, &p), Some(11));
        assert_eq!(line_of(SRC, &KeyPath::default().key("workers")), Some(1));
        let servers = KeyPath::default()
            .key("upstreams")
            .key("app")
            .key("servers");
        assert_eq!(line_of(SRC, &servers), Some(4));
    }

    #[test]
    fn finds_the_key_around_an_offset() {
        let offset = SRC.find("\"nope\"").unwrap() + 1;
        let path = key_at(SRC, offset).expect("inside a value");
        assert_eq!(path.to_string(), "routes[1].upstream");
        let offset = SRC.find("\"a\"").unwrap();
        assert_eq!(
            key_at(SRC, offset).unwrap().to_string(),
            "upstreams.app.servers[0]"
        );
    }

    #[test]
    fn names_a_duplicate_key_with_its_path() {
        let dup = |src: &str| {
            let e = toml::from_str::<toml::Table>(src).unwrap_err();
            duplicate_key_at(src, e.span().unwrap()).map(|p| p.to_string())
        };
        assert_eq!(
            dup("workers = 1\nworkers = 2\n").as_deref(),
            Some("workers")
        );
        assert_eq!(dup("[log]\n[log]\n").as_deref(), Some("log"));
        assert_eq!(
            dup("[[routes]]\npath = \"/\"\n[[routes]]\npath = \"/\"\npath = \"/x\"\n").as_deref(),
            Some("routes[1].path")
        );
        assert_eq!(dup("a.b = 1\na.b = 2\n").as_deref(), Some("a.b"));
    }

    #[test]
    fn missing_key_points_at_its_table() {
        let p = KeyPath::default().key("routes").index(0).key("upstream");
        let line = line_of(SRC, &p).expect("the route exists");
        assert!((6..=7).contains(&line), "line {line}");
    }

    /// The validator locates every problem it finds: a file with many is
    /// still parsed once (and the lines found are those of each key).
    #[test]
    fn many_problems_are_located_with_one_parse() {
        let mut src = String::from("[upstreams.app]\nservers = [\"127.0.0.1:1\"]\n");
        for i in 0..200 {
            src += &format!("[[routes]]\nhost = \"h{i}\"\nupstream = \"missing{i}\"\n");
        }
        PARSES.with(|p| p.set(0));
        let Err(ConfigError::Invalid { problems }) = validate(Path::new("t.toml"), &src) else {
            panic!("every route names a missing upstream");
        };
        assert_eq!(problems.len(), 200);
        for (i, p) in problems.iter().enumerate() {
            assert_eq!(p.key, format!("routes[{i}].upstream"));
            assert_eq!(p.line, Some(5 + 3 * i), "{p}");
        }
        assert_eq!(PARSES.with(Cell::get), 1, "parses of the text");
    }

    /// Problems located after loading (the master's start checks) reuse
    /// the index too; a path the file does not have is not located.
    #[test]
    fn a_locator_parses_its_text_once_for_every_problem() {
        let locator = Locator::new(Path::new("t.toml"), SRC.to_owned());
        PARSES.with(|p| p.set(0));
        let upstream = KeyPath::default().key("routes").index(1).key("upstream");
        for _ in 0..10 {
            assert_eq!(locator.problem(&upstream, "why").line, Some(11));
        }
        let nowhere = KeyPath::default().key("admin").key("addr");
        assert_eq!(locator.problem(&nowhere, "why").line, None);
        assert_eq!(PARSES.with(Cell::get), 1, "parses of the text");
    }
}
