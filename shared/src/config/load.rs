//! Loading a config file: read it, parse the TOML into the raw model, and
//! validate that into a [`Config`], or say every problem found.

use super::locate::{Locator, Problem};
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

/// A validated config and the text it was read from, to locate problems
/// found beyond the file (see [`Locator`]).
#[derive(Debug)]
pub struct Loaded {
    /// The validated config.
    pub config: Config,
    /// The file's text, to locate keys in it.
    pub locator: Locator,
}

/// Reads and validates the config file at `path`. The file is read once.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    let source = String::from_utf8(bytes).map_err(|e| {
        let valid_up_to = e.utf8_error().valid_up_to();
        let valid = &e.as_bytes()[..valid_up_to];
        ConfigError::Invalid {
            problems: vec![Problem {
                file: path.to_owned(),
                line: Some(valid.iter().filter(|&&b| b == b'\n').count() + 1),
                key: String::new(),
                message: format!("invalid UTF-8 at byte {valid_up_to}: a TOML file must be UTF-8"),
            }],
        }
    })?;
    let locator = Locator::new(path, source);
    let config = validated(&locator)?;
    Ok(Loaded { config, locator })
}

/// Validates config text; `path` is used for messages and kept in the result.
pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
    validated(&Locator::new(path, source.to_owned()))
}

fn validated(locator: &Locator) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid { problems };
    let raw: RawConfig =
        toml::from_str(locator.source()).map_err(|e| invalid(vec![locator.parse_error(&e)]))?;
    validate::config(locator, raw).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::locate::KeyPath;
    use crate::config::testing::parse_err;

    /// What the master's start checks rely on: problems they find are
    /// located in the text loaded, not in a second read of the file.
    #[test]
    fn a_loaded_config_locates_keys_after_its_file_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "workers = 1\n\n[log]\naccess_log = \"off\"\n").unwrap();
        let loaded = load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let key = KeyPath::default().key("log").key("access_log");
        assert_eq!(
            loaded.locator.problem(&key, "why").to_string(),
            format!("{}:4: log.access_log: why", path.display())
        );
    }

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
