//! `[log]`: the error and access log destinations and the access-log
//! format, and a route's own `access_log`.

use super::Validator;
use crate::config::access_format::{parse_template, AccessFormat};
use crate::config::locate::KeyPath;
use crate::config::model::{LogConfig, LogTarget, RouteAccessLog};
use crate::config::raw::RawLog;
use std::path::PathBuf;

impl Validator<'_> {
    /// A log destination: `"stderr"`, `"stdout"`, a file path, or `None`
    /// for `"off"`; `default` when the key is absent.
    fn log_target(
        &mut self,
        path: KeyPath,
        raw: Option<String>,
        default: LogTarget,
    ) -> Option<LogTarget> {
        match raw.as_deref() {
            None => Some(default),
            Some("off") => None,
            Some("stderr") => Some(LogTarget::Stderr),
            Some("stdout") => Some(LogTarget::Stdout),
            Some("") => {
                self.problem(
                    &path,
                    "expected \"stderr\", \"stdout\", \"off\" or a file path",
                );
                Some(default)
            }
            Some(file) => Some(LogTarget::File(PathBuf::from(file))),
        }
    }

    pub(super) fn log(&mut self, path: KeyPath, raw: RawLog) -> LogConfig {
        let error_log =
            match self.log_target(path.key("error_log"), raw.error_log, LogTarget::Stderr) {
                Some(t) => t,
                None => {
                    self.problem(&path.key("error_log"), "the error log cannot be turned off");
                    LogTarget::Stderr
                }
            };
        let access_log = self.log_target(path.key("access_log"), raw.access_log, LogTarget::Stdout);
        let access_log_format =
            self.access_format(path.key("access_log_format"), raw.access_log_format);
        LogConfig {
            error_log,
            access_log,
            access_log_format,
        }
    }

    fn access_format(&mut self, path: KeyPath, raw: Option<String>) -> AccessFormat {
        match raw.as_deref() {
            None | Some("combined") => AccessFormat::Combined,
            Some("json") => AccessFormat::Json,
            Some(template) => match parse_template(template) {
                Ok(t) => AccessFormat::Template(t),
                Err(why) => {
                    self.problem(
                        &path,
                        format!("{why}; write \"combined\", \"json\" or a template"),
                    );
                    AccessFormat::Combined
                }
            },
        }
    }

    pub(super) fn route_access_log(
        &mut self,
        path: KeyPath,
        raw: Option<String>,
    ) -> RouteAccessLog {
        if raw.is_none() {
            return RouteAccessLog::Inherit;
        }
        match self.log_target(path, raw, LogTarget::Stdout) {
            Some(target) => RouteAccessLog::To(target),
            None => RouteAccessLog::Off,
        }
    }
}
