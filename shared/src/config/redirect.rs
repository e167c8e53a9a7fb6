//! A `redirect` route: its status and the template its `Location` is built
//! from, of literal text and `$variables` named as nginx names them.

use super::template::Piece;
use serde::{Deserialize, Serialize};

/// The statuses a `redirect` may answer with.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// A redirect answered by prefork (nginx's `return 301 URL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// One of [`REDIRECT_STATUSES`].
    pub status: u16,
    /// The `Location` template.
    pub to: Vec<RedirectPart>,
}

/// A piece of a redirect's `Location` template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedirectPart {
    /// Copied as is.
    Text(String),
    /// Replaced by the request's value.
    Var(RedirectVar),
}

/// A value a redirect's `Location` can hold, named as nginx names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedirectVar {
    /// `$host`: the host the request was routed by (lower-cased, without
    /// its port).
    Host,
    /// `$request_uri`: the request target as received, query included.
    RequestUri,
    /// `$scheme`: `http` or `https`, as the client spoke.
    Scheme,
    /// `$uri`: the normalised path, without the query.
    Uri,
    /// `$args`: the query, without its `?` (empty if none).
    Args,
}

impl RedirectVar {
    /// Every variable with its template name.
    pub const ALL: [(&'static str, RedirectVar); 5] = [
        ("host", RedirectVar::Host),
        ("request_uri", RedirectVar::RequestUri),
        ("scheme", RedirectVar::Scheme),
        ("uri", RedirectVar::Uri),
        ("args", RedirectVar::Args),
    ];
}

/// Parses a redirect target: `$name` (or `${name}`) variables among literal
/// text; `$$` is a literal `$`. The literal text must be valid in a header
/// field value (no control characters).
pub fn parse_target(text: &str) -> Result<Vec<RedirectPart>, String> {
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if text.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters".to_owned());
    }
    let pieces = super::template::parse(text, &RedirectVar::ALL, "the target")?;
    Ok(pieces
        .into_iter()
        .map(|p| match p {
            Piece::Text(t) => RedirectPart::Text(t),
            Piece::Var(v) => RedirectPart::Var(v),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_hold_variables_and_text() {
        let t = parse_target("https://${host}:8443$request_uri?x=$$").unwrap();
        assert_eq!(
            t,
            vec![
                RedirectPart::Text("https://".into()),
                RedirectPart::Var(RedirectVar::Host),
                RedirectPart::Text(":8443".into()),
                RedirectPart::Var(RedirectVar::RequestUri),
                RedirectPart::Text("?x=$".into()),
            ]
        );
        assert_eq!(
            parse_target("/new").unwrap(),
            vec![RedirectPart::Text("/new".into())]
        );
    }

    #[test]
    fn target_errors_name_the_problem() {
        assert!(parse_target("https://$hots/")
            .unwrap_err()
            .contains("unknown variable $hots"));
        assert!(parse_target("${uri").unwrap_err().contains("unclosed"));
        assert!(parse_target("").unwrap_err().contains("empty"));
        assert!(parse_target("/a\r\nX: y")
            .unwrap_err()
            .contains("control characters"));
    }
}
