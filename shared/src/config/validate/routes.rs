//! `[[routes]]`: which requests a route takes (host and path) and what it
//! does with them.

use super::Validator;
use crate::config::locate::KeyPath;
use crate::config::model::{FixedResponse, HostMatch, Route, RouteAction, Upstream};
use crate::config::raw::{RawRedirect, RawRespond, RawRoute};
use crate::config::redirect::{parse_target, Redirect, REDIRECT_STATUSES};
use crate::uri_path::{self, AboveRoot};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

impl Validator<'_> {
    pub(super) fn routes(
        &mut self,
        path: KeyPath,
        raw: Vec<RawRoute>,
        upstreams: &BTreeMap<String, Upstream>,
    ) -> Vec<Route> {
        let mut out = Vec::new();
        // The first route of each host and path, looked up rather than
        // searched for: a config may hold many thousands of routes.
        let mut seen: HashMap<(HostMatch, String), usize> = HashMap::new();
        for (i, r) in raw.into_iter().enumerate() {
            let p = path.index(i);
            let host = match r.host {
                None => HostMatch::Any,
                Some(h) => match parse_host(&h) {
                    Ok(m) => m,
                    Err(why) => {
                        self.problem(&p.key("host"), why);
                        continue;
                    }
                },
            };
            let route_path = r.path.unwrap_or_else(|| "/".to_owned());
            if !route_path.starts_with('/') {
                self.problem(
                    &p.key("path"),
                    format!("must start with '/' (found {route_path:?})"),
                );
                continue;
            }
            // Routing sees the target without its query; a request target
            // holds no spaces or control characters.
            if route_path
                .bytes()
                .any(|b| b == b'?' || b == b'#' || b == b' ' || b.is_ascii_control())
            {
                self.problem(
                    &p.key("path"),
                    format!(
                        "no request path holds '?', '#', spaces or control characters: this route can never match (found {route_path:?})"
                    ),
                );
                continue;
            }
            // Requests are routed by their normalised path: so is the route's.
            let route_path = match uri_path::normalize(route_path.as_bytes()) {
                Ok(normal) => match String::from_utf8(normal.into_owned()) {
                    Ok(normal) => normal,
                    Err(_) => {
                        self.problem(
                            &p.key("path"),
                            format!("its escapes decode to bytes that are not UTF-8 (found {route_path:?})"),
                        );
                        continue;
                    }
                },
                Err(AboveRoot) => {
                    self.problem(
                        &p.key("path"),
                        format!("'..' climbs above the root: no request path can (found {route_path:?})"),
                    );
                    continue;
                }
            };
            let action = match (r.upstream, r.respond, r.redirect) {
                (None, None, None) => {
                    self.problem(
                        &p,
                        "a route needs `upstream = \"name\"`, `respond = { ... }` or `redirect = { ... }`",
                    );
                    continue;
                }
                (Some(name), None, None) => {
                    if !upstreams.contains_key(&name) {
                        let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                        self.problem(
                            &p.key("upstream"),
                            format!(
                                "no upstream named {name:?} (defined: {})",
                                if known.is_empty() {
                                    "none".to_owned()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                        continue;
                    }
                    RouteAction::Proxy(name)
                }
                (None, Some(resp), None) => match self.respond(p.key("respond"), resp) {
                    Some(f) => RouteAction::Respond(f),
                    None => continue,
                },
                (None, None, Some(redirect)) => match self.redirect(p.key("redirect"), redirect) {
                    Some(r) => RouteAction::Redirect(r),
                    None => continue,
                },
                _ => {
                    self.problem(
                        &p,
                        "a route takes either `upstream`, `respond` or `redirect`, not two of them",
                    );
                    continue;
                }
            };
            match seen.entry((host.clone(), route_path.clone())) {
                Entry::Occupied(first) => {
                    self.problem(
                        &p,
                        format!(
                            "same host and path as routes[{}], which always wins: this route can never match",
                            first.get()
                        ),
                    );
                    continue;
                }
                Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
            let access_log = self.route_access_log(p.key("access_log"), r.access_log);
            let max_body_size = r
                .max_body_size
                .as_ref()
                .and_then(|s| self.size(p.key("max_body_size"), s));
            out.push(Route {
                host,
                path: route_path,
                action,
                access_log,
                max_body_size,
            });
        }
        out
    }

    fn redirect(&mut self, path: KeyPath, raw: RawRedirect) -> Option<Redirect> {
        // nginx's `permanent` (and `return 301`): the usual answer for a
        // site moved for good, such as plain HTTP sent on to HTTPS.
        let status = raw.status.unwrap_or(301);
        if !REDIRECT_STATUSES.contains(&status) {
            self.problem(
                &path.key("status"),
                format!("must be 301, 302, 303, 307 or 308 (found {status})"),
            );
            return None;
        }
        match parse_target(&raw.to) {
            Ok(to) => Some(Redirect { status, to }),
            Err(why) => {
                self.problem(&path.key("to"), why);
                None
            }
        }
    }

    fn respond(&mut self, path: KeyPath, raw: RawRespond) -> Option<FixedResponse> {
        let status = raw.status.unwrap_or(200);
        if !(200..=599).contains(&status) {
            self.problem(
                &path.key("status"),
                format!("must be between 200 and 599 (found {status})"),
            );
            return None;
        }
        if matches!(status, 204 | 304) && raw.body.as_deref().is_some_and(|b| !b.is_empty()) {
            self.problem(
                &path.key("body"),
                format!("a {status} response has no body"),
            );
            return None;
        }
        let content_type = raw.content_type.unwrap_or_else(|| "text/plain".to_owned());
        if content_type.bytes().any(|b| b.is_ascii_control()) {
            self.problem(
                &path.key("content_type"),
                "must not contain control characters",
            );
            return None;
        }
        Some(FixedResponse {
            status,
            body: raw.body.unwrap_or_default(),
            content_type,
        })
    }
}

/// Parses a route's `host`: a name, or `*.suffix`.
fn parse_host(raw: &str) -> Result<HostMatch, String> {
    // Requests are matched by their host without its trailing dot (the
    // same name): a route host keeping one could never match.
    let lower = raw.to_ascii_lowercase();
    let host = lower.strip_suffix('.').unwrap_or(&lower);
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
            })
    };
    // The request's host is matched without its port: a ':' outside an
    // IPv6 literal's brackets could never match.
    let port_like = |s: &str| s.rsplit_once(']').map_or(s, |(_, rest)| rest).contains(':');
    if port_like(host) {
        return Err(format!(
            "invalid host {raw:?}: write it without a port (requests are matched by host alone)"
        ));
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        if valid(suffix) && !suffix.contains('*') {
            return Ok(HostMatch::Suffix(format!(".{suffix}")));
        }
    } else if valid(host) {
        return Ok(HostMatch::Exact(host.to_owned()));
    }
    Err(format!(
        "invalid host {raw:?}: write a name such as \"app.local\" or a wildcard such as \"*.example.com\""
    ))
}

#[cfg(test)]
mod tests {
    use crate::config::model::HostMatch;
    use crate::config::testing::{parse_err, parse_ok};

    #[test]
    fn missing_upstream_names_line_and_key() {
        let e = parse_err("[[routes]]\nhost = \"a\"\nupstream = \"nope\"\n");
        assert_eq!(
            e,
            "t.toml:3: routes[0].upstream: no upstream named \"nope\" (defined: none)"
        );
    }

    #[test]
    fn route_needs_exactly_one_action() {
        let both = parse_err(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"a\"\nrespond = { body = \"x\" }\n",
        );
        assert!(both.contains("routes[0]: a route takes either"), "{both}");
        let neither = parse_err("[[routes]]\npath = \"/\"\n");
        assert!(neither.contains("routes[0]: a route needs"), "{neither}");
        let three =
            parse_err("[[routes]]\nrespond = { body = \"x\" }\nredirect = { to = \"/y\" }\n");
        assert!(three.contains("routes[0]: a route takes either"), "{three}");
    }

    #[test]
    fn redirects_take_a_target_and_a_status() {
        use crate::config::model::RouteAction;
        use crate::config::redirect::{Redirect, RedirectPart, RedirectVar};
        let c = parse_ok(
            "[[routes]]\nredirect = { to = \"https://$host$request_uri\" }\n\
             [[routes]]\npath = \"/old\"\nredirect = { to = \"/new?$args\", status = 308 }\n",
        );
        assert_eq!(
            c.routes[0].action,
            RouteAction::Redirect(Redirect {
                status: 301,
                to: vec![
                    RedirectPart::Text("https://".into()),
                    RedirectPart::Var(RedirectVar::Host),
                    RedirectPart::Var(RedirectVar::RequestUri),
                ],
            })
        );
        assert!(matches!(
            &c.routes[1].action,
            RouteAction::Redirect(Redirect { status: 308, .. })
        ));
    }

    #[test]
    fn bad_redirects_name_line_and_key() {
        let e = parse_err(
            "[[routes]]\nredirect = { to = \"https://$hostname/\" }\n\
             [[routes]]\npath = \"/b\"\nredirect = { to = \"/x\", status = 200 }\n",
        );
        let lines: Vec<&str> = e.lines().collect();
        assert!(
            lines[0].starts_with("t.toml:2: routes[0].redirect.to: unknown variable $hostname"),
            "{e}"
        );
        assert_eq!(
            lines[1],
            "t.toml:5: routes[1].redirect.status: must be 301, 302, 303, 307 or 308 (found 200)"
        );
        assert_eq!(lines.len(), 2, "{e}");
        let e = parse_err("[[routes]]\nredirect = { status = 301 }\n");
        assert!(e.starts_with("t.toml:2: routes[0].redirect"), "{e}");
        assert!(e.contains("missing field `to`"), "{e}");
    }

    #[test]
    fn routes_that_can_never_match_are_refused() {
        let up = "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n";
        let e = parse_err(&format!(
            "{up}[[routes]]\nhost = \"A.local\"\nupstream = \"a\"\n[[routes]]\nhost = \"a.local\"\npath = \"/\"\nupstream = \"a\"\n"
        ));
        assert!(
            e.starts_with("t.toml:6: routes[1]: same host and path as routes[0]"),
            "{e}"
        );
        let e = parse_err(&format!(
            "{up}[[routes]]\nhost = \"a.local:8080\"\nupstream = \"a\"\n"
        ));
        assert!(
            e.starts_with(
                "t.toml:4: routes[0].host: invalid host \"a.local:8080\": write it without a port"
            ),
            "{e}"
        );
        assert_eq!(
            parse_ok(&format!(
                "{up}[[routes]]\nhost = \"[::1]\"\nupstream = \"a\"\n"
            ))
            .routes[0]
                .host,
            HostMatch::Exact("[::1]".into())
        );
        for bad in ["/a?b", "/a#b", "/a b", "/a\\t"] {
            let e = parse_err(&format!(
                "{up}[[routes]]\npath = \"{bad}\"\nupstream = \"a\"\n"
            ));
            assert!(
                e.starts_with("t.toml:4: routes[0].path: no request path holds"),
                "{bad}: {e}"
            );
        }
        // Same path under different hosts is fine.
        parse_ok(&format!(
            "{up}[[routes]]\nhost = \"a\"\nupstream = \"a\"\n[[routes]]\nhost = \"b\"\nupstream = \"a\"\n"
        ));
    }

    /// Route paths are normalised as request paths are (escapes decoded,
    /// dot segments resolved, slashes merged), or some could never match.
    #[test]
    fn route_paths_are_normalised_like_request_paths() {
        let c = parse_ok(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\npath = \"/x/../%61pi//v1/\"\nupstream = \"a\"\n",
        );
        assert_eq!(c.routes[0].path, "/api/v1/");
        let e = parse_err(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\npath = \"/../x\"\nupstream = \"a\"\n",
        );
        assert!(
            e.contains("t.toml:4: routes[0].path: '..' climbs above the root"),
            "{e}"
        );
        let e = parse_err(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\npath = \"/%FF\"\nupstream = \"a\"\n",
        );
        assert!(
            e.contains("routes[0].path: its escapes decode to bytes that are not UTF-8"),
            "{e}"
        );
    }

    /// Requests are routed by their host without its trailing dot
    /// (`app.local.` is the name `app.local`): a route host written with one
    /// names the same host, or it could never match.
    #[test]
    fn route_hosts_with_a_trailing_dot_match_their_name() {
        let c = parse_ok(
            "[upstreams.a]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\nhost = \"App.Local.\"\nupstream = \"a\"\n\
             [[routes]]\nhost = \"*.example.com.\"\nupstream = \"a\"\n",
        );
        assert!(c.routes[0].host.matches("app.local"));
        assert!(c.routes[1].host.matches("a.example.com"));
    }

    #[test]
    fn fixed_204_and_304_responses_take_no_body() {
        for status in [204, 304] {
            let e = parse_err(&format!(
                "[[routes]]\nrespond = {{ status = {status}, body = \"x\" }}\n"
            ));
            assert!(
                e.starts_with(&format!(
                    "t.toml:2: routes[0].respond.body: a {status} response has no body"
                )),
                "{e}"
            );
            parse_ok(&format!("[[routes]]\nrespond = {{ status = {status} }}\n"));
        }
    }
}
