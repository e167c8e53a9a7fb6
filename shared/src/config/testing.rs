//! Helpers for the configuration's unit tests.

use super::load::parse;
use super::model::Config;
use std::path::Path;

/// The config `src` (named `t.toml`) validates into; panics with the
/// problems otherwise.
pub fn parse_ok(src: &str) -> Config {
    parse(Path::new("t.toml"), src).unwrap_or_else(|e| panic!("{e}"))
}

/// The problems `src` (named `t.toml`) is refused with, one per line.
pub fn parse_err(src: &str) -> String {
    match parse(Path::new("t.toml"), src) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e.to_string(),
    }
}
