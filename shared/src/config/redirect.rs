//! A `redirect` route: its status and the template its `Location` is built
//! from, of literal text and `$variables` named as nginx names them.

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
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            literal.push('$');
            rest = after;
            continue;
        }
        let (name, after) = match rest.strip_prefix('{') {
            Some(braced) => {
                let end = braced
                    .find('}')
                    .ok_or_else(|| "unclosed `${` in the target".to_owned())?;
                (&braced[..end], &braced[end + 1..])
            }
            None => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            }
        };
        let var = RedirectVar::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let known: Vec<&str> = RedirectVar::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown variable ${name} (known: ${})", known.join(", $"))
            })?;
        if !literal.is_empty() {
            out.push(RedirectPart::Text(std::mem::take(&mut literal)));
        }
        out.push(RedirectPart::Var(var));
        rest = after;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        out.push(RedirectPart::Text(literal));
    }
    Ok(out)
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
