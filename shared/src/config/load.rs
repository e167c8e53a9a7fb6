//! Loading a config file: read it, parse the TOML into the raw model, and
//! validate that into a [`Config`], or say every problem found.

use super::locate::{duplicate_key_at, key_at, line_at, line_of, KeyPath, Problem};
use super::model::Config;
use super::raw::RawConfig;
use super::validate;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read config: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{}", Problems(.problems))]
    Invalid {
        /// Every problem found, in file order where known.
        problems: Vec<Problem>,
    },
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A problem with the value at `key` found by a check beyond the file
/// itself (the system's users, the file system), located in `file` as the
/// validator's own problems are, so that it reads `file:line: key: reason`
/// too. The file is read again for the line; without it, the line is left out.
pub fn problem_at(file: &Path, key: &KeyPath, message: impl Into<String>) -> Problem {
    let line = std::fs::read_to_string(file)
        .ok()
        .and_then(|source| line_of(&source, key));
    Problem {
        file: file.to_owned(),
        line,
        key: key.to_string(),
        message: message.into(),
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    match std::str::from_utf8(&bytes) {
        Ok(source) => parse(path, source),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            Err(ConfigError::Invalid {
                problems: vec![Problem {
                    file: path.to_owned(),
                    line: Some(valid.iter().filter(|&&b| b == b'\n').count() + 1),
                    key: String::new(),
                    message: format!(
                        "invalid UTF-8 at byte {}: a TOML file must be UTF-8",
                        e.valid_up_to()
                    ),
                }],
            })
        }
    }
}

/// Validates config text; `path` is used for messages and kept in the result.
pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(source).map_err(|e| ConfigError::Invalid {
        problems: vec![Problem {
            file: path.to_owned(),
            line: e.span().map(|s| line_at(source, s.start)),
            key: e
                .span()
                .and_then(|s| key_at(source, s.start).or_else(|| duplicate_key_at(source, s)))
                .map(|k| k.to_string())
                .unwrap_or_default(),
            message: e.message().trim().to_owned(),
        }],
    })?;
    validate::config(path, source, raw).map_err(|problems| ConfigError::Invalid { problems })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::parse_err;

    #[test]
    fn unknown_key_names_line() {
        let e = parse_err("workers = 2\nwrokers = 3\n");
        assert!(e.starts_with("t.toml:2:"), "{e}");
        assert!(e.contains("wrokers"), "{e}");
    }

    #[test]
    fn type_error_names_line_and_key() {
        let e = parse_err("workers = 2\n[upstreams.a]\nservers = \"127.0.0.1:1\"\n");
        assert!(
            e.starts_with("t.toml:3: upstreams.a.servers: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_has_line() {
        let e = parse_err("workers = 2\n[log\n");
        assert!(e.starts_with("t.toml:2:"), "{e}");
    }

    #[test]
    fn non_utf8_bytes_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, b"workers = 1\nuser = \"\xff\"\n").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:2: invalid UTF-8 at byte 20: a TOML file must be UTF-8",
                path.display()
            )
        );
    }

    #[test]
    fn a_duplicate_key_is_named() {
        let e = parse_err("workers = 1\n[log]\naccess_log = \"off\"\naccess_log = \"stdout\"\n");
        assert!(
            e.starts_with("t.toml:4: log.access_log: duplicate key"),
            "{e}"
        );
    }
}
