//! The access-log line format: `combined`, `json`, or a template of text
//! and `$variables` named as nginx names them.

use super::template::Piece;
use serde::{Deserialize, Serialize};

/// How access-log lines look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessFormat {
    /// nginx/Apache "combined", with the request id appended.
    Combined,
    /// One JSON object per line.
    Json,
    /// A template of literal text and `$variables`.
    Template(Vec<Segment>),
}

/// A piece of an access-log template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Segment {
    /// Copied as is.
    Text(String),
    /// Replaced by a request's value.
    Field(AccessField),
}

/// A value an access-log template can show, named as nginx names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessField {
    /// `$remote_addr`: the client's IP address.
    RemoteAddr,
    /// `$time_local`: `10/Oct/2000:13:55:36 +0000` (UTC).
    TimeLocal,
    /// `$time_iso8601`: `2000-10-10T13:55:36Z`.
    TimeIso8601,
    /// `$request`: the request line (`GET /path HTTP/1.1`).
    Request,
    /// `$request_method`.
    RequestMethod,
    /// `$request_uri`: the request target.
    RequestUri,
    /// `$server_protocol`: `HTTP/1.0` or `HTTP/1.1`.
    ServerProtocol,
    /// `$host`: the `Host` field.
    Host,
    /// `$status`: the status sent (0: none).
    Status,
    /// `$bytes_sent`: bytes written to the client, head included.
    BytesSent,
    /// `$request_time`: seconds from the complete request head to the end
    /// of the response, with milliseconds.
    RequestTime,
    /// `$upstream_addr`: the server the request went to, or `-`.
    UpstreamAddr,
    /// `$upstream_response_time`: seconds spent with the upstream, or `-`.
    UpstreamResponseTime,
    /// `$http_referer`.
    HttpReferer,
    /// `$http_user_agent`.
    HttpUserAgent,
    /// `$request_id`: the `X-Request-Id` sent upstream.
    RequestId,
    /// `$route`: the label of the matching route (`-` for none).
    Route,
    /// `$pid`: the pid of the worker that served the request.
    Pid,
    /// `$ssl_protocol`: the TLS version (`TLSv1.3`), `-` without TLS.
    SslProtocol,
    /// `$ssl_cipher`: the TLS cipher suite (rustls's name), `-` without TLS.
    SslCipher,
    /// `$ssl_server_name`: the name the client asked for (SNI), `-` without.
    SslServerName,
}

impl AccessField {
    /// Every field with its template name.
    pub const ALL: [(&'static str, AccessField); 21] = [
        ("remote_addr", AccessField::RemoteAddr),
        ("time_local", AccessField::TimeLocal),
        ("time_iso8601", AccessField::TimeIso8601),
        ("request", AccessField::Request),
        ("request_method", AccessField::RequestMethod),
        ("request_uri", AccessField::RequestUri),
        ("server_protocol", AccessField::ServerProtocol),
        ("host", AccessField::Host),
        ("status", AccessField::Status),
        ("bytes_sent", AccessField::BytesSent),
        ("request_time", AccessField::RequestTime),
        ("upstream_addr", AccessField::UpstreamAddr),
        ("upstream_response_time", AccessField::UpstreamResponseTime),
        ("http_referer", AccessField::HttpReferer),
        ("http_user_agent", AccessField::HttpUserAgent),
        ("request_id", AccessField::RequestId),
        ("route", AccessField::Route),
        ("pid", AccessField::Pid),
        ("ssl_protocol", AccessField::SslProtocol),
        ("ssl_cipher", AccessField::SslCipher),
        ("ssl_server_name", AccessField::SslServerName),
    ];
}

/// Parses an access-log template: `$name` (or `${name}`) variables among
/// literal text; `$$` is a literal `$`.
pub fn parse_template(text: &str) -> Result<Vec<Segment>, String> {
    let out: Vec<Segment> = super::template::parse(text, &AccessField::ALL, "the template")?
        .into_iter()
        .map(|p| match p {
            Piece::Text(t) => Segment::Text(t),
            Piece::Var(f) => Segment::Field(f),
        })
        .collect();
    if !out.iter().any(|s| matches!(s, Segment::Field(_))) {
        return Err("the template shows no $variable".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_variables_and_text() {
        let t = parse_template("$remote_addr - ${status}x $$ $request_id").unwrap();
        assert_eq!(
            t,
            vec![
                Segment::Field(AccessField::RemoteAddr),
                Segment::Text(" - ".into()),
                Segment::Field(AccessField::Status),
                Segment::Text("x $ ".into()),
                Segment::Field(AccessField::RequestId),
            ]
        );
    }

    #[test]
    fn template_errors_name_the_problem() {
        assert!(parse_template("$nope")
            .unwrap_err()
            .contains("unknown variable $nope"));
        assert!(parse_template("${status").unwrap_err().contains("unclosed"));
        assert!(parse_template("plain")
            .unwrap_err()
            .contains("no $variable"));
    }
}
