//! The route table: which route a request takes, found with a few hash
//! lookups and a walk down a path trie, so that its cost does not grow with
//! the number of routes (nginx looks server names up in hash tables too).
//!
//! The rules: the most specific host match wins (the exact host, then the
//! longest wildcard suffix, then any host), then the longest path prefix,
//! then the earliest route. A host whose routes' paths all miss falls back
//! to less specific hosts.

use crate::config::{HostMatch, Route};
use rustc_hash::FxHashMap;

/// Where a configuration's requests go, built once per configuration.
///
/// Fx hashing (fast, not keyed): the keys come from the configuration, so a
/// client cannot pile up colliding keys; it only looks hosts up, once for
/// the exact host and at most once per wildcard length.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// The path trie of each exact host.
    exact: FxHashMap<Box<str>, NodeId>,
    /// The path trie of each wildcard, by suffix (`.example.com`).
    suffix: FxHashMap<Box<str>, NodeId>,
    /// `has_suffix_len[n]`: some wildcard's suffix is `n` bytes long. A
    /// host's suffixes of other lengths are not looked up, so a client's
    /// host with many dots costs at most one lookup per wildcard length.
    has_suffix_len: Vec<bool>,
    /// The path trie of routes for any host.
    any: Option<NodeId>,
    /// The nodes of every trie.
    nodes: Vec<Node>,
}

/// An index in [`RouteTable::nodes`].
type NodeId = usize;

/// A node of a path trie: the path spelled by the bytes from its root.
#[derive(Debug, Clone, Default)]
struct Node {
    /// The earliest route whose path ends here.
    route: Option<usize>,
    /// The next byte of longer paths, sorted, and the node it leads to.
    children: Vec<(u8, NodeId)>,
}

impl RouteTable {
    /// The table of `routes` (a configuration's, in file order: indexes in
    /// it are what [`RouteTable::lookup`] returns). Wildcard suffixes start
    /// with a `.`, as the validator writes them.
    pub fn new(routes: &[Route]) -> RouteTable {
        let mut table = RouteTable::default();
        for (i, route) in routes.iter().enumerate() {
            let root = match &route.host {
                HostMatch::Exact(host) => Self::root(&mut table.nodes, &mut table.exact, host),
                HostMatch::Suffix(suffix) => {
                    if table.has_suffix_len.len() <= suffix.len() {
                        table.has_suffix_len.resize(suffix.len() + 1, false);
                    }
                    table.has_suffix_len[suffix.len()] = true;
                    Self::root(&mut table.nodes, &mut table.suffix, suffix)
                }
                HostMatch::Any => *table
                    .any
                    .get_or_insert_with(|| Self::add_node(&mut table.nodes)),
            };
            table.insert(root, route.path.as_bytes(), i);
        }
        table
    }

    /// The index of the route a request for `host` (lower-cased, without
    /// its port) and `path` (normalised, [`crate::uri_path::normalize`])
    /// takes, or `None` (404).
    pub fn lookup(&self, host: &str, path: &[u8]) -> Option<usize> {
        if let Some(&root) = self.exact.get(host) {
            if let Some(route) = self.longest_prefix(root, path) {
                return Some(route);
            }
        }
        if let Some(route) = self.by_suffix(host, path) {
            return Some(route);
        }
        self.any.and_then(|root| self.longest_prefix(root, path))
    }

    /// The route of the longest wildcard suffix of `host` with a path that
    /// matches. `*.example.com` matches `a.example.com`, not `example.com`:
    /// a suffix starts at a dot after the host's first byte.
    fn by_suffix(&self, host: &str, path: &[u8]) -> Option<usize> {
        let longest = self.has_suffix_len.len().checked_sub(1)?;
        let from = host.len().saturating_sub(longest).max(1);
        let bytes = host.as_bytes();
        // Left to right: longer suffixes first.
        for at in from..bytes.len() {
            if bytes[at] != b'.' || !self.has_suffix_len[bytes.len() - at] {
                continue;
            }
            // A '.' is a character boundary.
            if let Some(&root) = self.suffix.get(&host[at..]) {
                if let Some(route) = self.longest_prefix(root, path) {
                    return Some(route);
                }
            }
        }
        None
    }

    /// The route of the longest path in the trie at `root` that `path`
    /// starts with.
    fn longest_prefix(&self, root: NodeId, path: &[u8]) -> Option<usize> {
        let mut node = &self.nodes[root];
        let mut best = node.route;
        for byte in path {
            match node.children.binary_search_by_key(byte, |&(b, _)| b) {
                Ok(at) => node = &self.nodes[node.children[at].1],
                Err(_) => break,
            }
            best = node.route.or(best);
        }
        best
    }

    /// The root of `key`'s trie in `map`, made if new.
    fn root(nodes: &mut Vec<Node>, map: &mut FxHashMap<Box<str>, NodeId>, key: &str) -> NodeId {
        if let Some(&root) = map.get(key) {
            return root;
        }
        let root = Self::add_node(nodes);
        map.insert(key.into(), root);
        root
    }

    /// A new node without route or children.
    fn add_node(nodes: &mut Vec<Node>) -> NodeId {
        nodes.push(Node::default());
        nodes.len() - 1
    }

    /// Adds route `route` with `path` to the trie at `root`; an earlier
    /// route with the same path keeps it.
    fn insert(&mut self, root: NodeId, path: &[u8], route: usize) {
        let mut node = root;
        for &byte in path {
            let children = &self.nodes[node].children;
            node = match children.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(at) => children[at].1,
                Err(at) => {
                    let child = Self::add_node(&mut self.nodes);
                    self.nodes[node].children.insert(at, (byte, child));
                    child
                }
            };
        }
        self.nodes[node].route.get_or_insert(route);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FixedResponse, RouteAccessLog, RouteAction};

    fn route(host: &str, path: &str) -> Route {
        let host = match host {
            "*" => HostMatch::Any,
            h => match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
                None => HostMatch::Exact(h.to_owned()),
            },
        };
        Route {
            host,
            path: path.to_owned(),
            action: RouteAction::Respond(FixedResponse {
                status: 200,
                body: String::new(),
                content_type: "text/plain".to_owned(),
            }),
            access_log: RouteAccessLog::default(),
            max_body_size: None,
        }
    }

    /// Routes written as `host path` (host `*` for any, `*.x` a wildcard).
    fn routes(spec: &[&str]) -> Vec<Route> {
        spec.iter()
            .map(|s| {
                let (host, path) = s.split_once(' ').expect("`host path`");
                route(host, path)
            })
            .collect()
    }

    /// The rules applied to every route in turn, keeping the best match
    /// (most specific host, then longest path, then earliest route): the
    /// oracle the table must agree with, too slow to route with but plain
    /// enough to check by eye.
    fn scan(routes: &[Route], host: &str, path: &[u8]) -> Option<usize> {
        let mut best: Option<(usize, usize, usize)> = None;
        for (i, route) in routes.iter().enumerate() {
            if !route.host.matches(host) || !path.starts_with(route.path.as_bytes()) {
                continue;
            }
            let rank = (route.host.specificity(), route.path.len());
            if best.is_none_or(|(_, h, p)| rank > (h, p)) {
                best = Some((i, rank.0, rank.1));
            }
        }
        best.map(|(r, _, _)| r)
    }

    /// The table's answer, checked against the scan's.
    fn pick(routes: &[Route], host: &str, path: &str) -> Option<usize> {
        let found = RouteTable::new(routes).lookup(host, path.as_bytes());
        assert_eq!(
            found,
            scan(routes, host, path.as_bytes()),
            "{host} {path} in {routes:?}"
        );
        found
    }

    #[test]
    fn no_routes_route_nothing() {
        assert_eq!(pick(&[], "a", "/"), None);
        assert_eq!(pick(&routes(&["a /"]), "b", "/"), None);
        assert_eq!(pick(&routes(&["a /x"]), "a", "/"), None);
    }

    #[test]
    fn exact_beats_wildcard_beats_any_whatever_the_paths() {
        let r = routes(&["* /a/b/c", "*.example.com /a/b", "api.example.com /"]);
        assert_eq!(pick(&r, "api.example.com", "/a/b/c"), Some(2));
        assert_eq!(pick(&r, "www.example.com", "/a/b/c"), Some(1));
        assert_eq!(pick(&r, "example.org", "/a/b/c"), Some(0));
    }

    #[test]
    fn a_longer_wildcard_beats_a_shorter_one() {
        let r = routes(&["*.com /", "*.example.com /", "*.a.example.com /"]);
        assert_eq!(pick(&r, "x.a.example.com", "/"), Some(2));
        assert_eq!(pick(&r, "x.b.example.com", "/"), Some(1));
        assert_eq!(pick(&r, "a.example.com", "/"), Some(1));
        assert_eq!(pick(&r, "example.com", "/"), Some(0));
        assert_eq!(pick(&r, "x.org", "/"), None);
    }

    #[test]
    fn a_wildcard_matches_subdomains_at_any_depth_but_not_its_own_name() {
        let r = routes(&["*.example.com /"]);
        assert_eq!(pick(&r, "a.b.c.example.com", "/"), Some(0));
        assert_eq!(pick(&r, "example.com", "/"), None);
        assert_eq!(pick(&r, ".example.com", "/"), None);
        assert_eq!(pick(&r, "xexample.com", "/"), None);
        assert_eq!(pick(&r, "..example.com", "/"), Some(0));
    }

    #[test]
    fn the_longest_path_prefix_wins_within_a_host() {
        let r = routes(&["a /", "a /api/v1", "a /api", "a /api/v1/users/"]);
        assert_eq!(pick(&r, "a", "/api/v1/users/7"), Some(3));
        assert_eq!(pick(&r, "a", "/api/v1/users"), Some(1));
        assert_eq!(pick(&r, "a", "/api/v2"), Some(2));
        assert_eq!(pick(&r, "a", "/other"), Some(0));
        // Prefixes are of bytes, not of segments.
        assert_eq!(pick(&r, "a", "/apiary"), Some(2));
    }

    #[test]
    fn the_earliest_route_wins_a_tie() {
        let r = routes(&["a /x", "b /", "a /x", "*.b /", "*.b /"]);
        assert_eq!(pick(&r, "a", "/x"), Some(0));
        assert_eq!(pick(&r, "c.b", "/"), Some(3));
    }

    #[test]
    fn a_host_whose_paths_all_miss_falls_back_to_less_specific_hosts() {
        let r = routes(&[
            "* /",
            "*.example.com /static",
            "*.a.example.com /v2",
            "x.a.example.com /v1",
        ]);
        assert_eq!(pick(&r, "x.a.example.com", "/v1/u"), Some(3));
        assert_eq!(pick(&r, "x.a.example.com", "/v2/u"), Some(2));
        assert_eq!(pick(&r, "x.a.example.com", "/static/a.css"), Some(1));
        assert_eq!(pick(&r, "x.a.example.com", "/"), Some(0));
        // Without an any-host route nothing is left to fall back to.
        assert_eq!(pick(&r[1..], "x.a.example.com", "/"), None);
    }

    #[test]
    fn requests_without_a_host_take_any_host_routes_only() {
        let r = routes(&["*.a /", "a /", "* /any"]);
        assert_eq!(pick(&r, "", "/any"), Some(2));
        assert_eq!(pick(&r, "", "/"), None);
    }

    #[test]
    fn odd_hosts_and_suffixes_match_as_written() {
        let r = routes(&["*..b /", "*.b /x", "[::1] /", "*.é.fr /"]);
        assert_eq!(pick(&r, "a..b", "/"), Some(0));
        assert_eq!(pick(&r, "a.b", "/x"), Some(1));
        assert_eq!(pick(&r, "a.b", "/"), None);
        assert_eq!(pick(&r, "[::1]", "/"), Some(2));
        assert_eq!(pick(&r, "ü.é.fr", "/"), Some(3));
        assert_eq!(pick(&r, "é.fr", "/"), None);
    }

    #[test]
    fn a_host_with_many_dots_finds_its_wildcard() {
        let r = routes(&["*.example.com /"]);
        let host = format!("{}example.com", "a.".repeat(4000));
        assert_eq!(pick(&r, &host, "/"), Some(0));
        assert_eq!(pick(&r, &format!("{}org", "a.".repeat(4000)), "/"), None);
    }

    /// Random route sets and requests from small alphabets (so that hosts,
    /// suffixes and paths overlap, and ties happen): the table agrees with
    /// the scan on every one.
    #[test]
    fn agrees_with_a_scan_of_every_route() {
        const HOSTS: &[&str] = &["a", "b.c", "x.b.c", "y.x.b.c", "c", "ab.c", "b..c"];
        const SUFFIXES: &[&str] = &[".c", ".b.c", ".x.b.c", "..c", ".a", ".bc"];
        const PATHS: &[&str] = &["/", "/a", "/ab", "/a/", "/a/b", "/b", "/abc/d"];
        const REQUEST_HOSTS: &[&str] = &[
            "",
            "a",
            "c",
            ".c",
            "b.c",
            "x.b.c",
            "y.x.b.c",
            "z.y.x.b.c",
            "ab.c",
            "b..c",
            "a.a",
            "bc",
            "x.bc",
            "..c",
        ];
        const REQUEST_PATHS: &[&str] = &[
            "/", "/a", "/ab", "/abc", "/abc/d/e", "/a/", "/a/b/c", "/b", "/bb", "/c",
        ];
        let mut checked = 0;
        for seed in 0..300 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let routes: Vec<Route> = (0..rng.usize(0..24))
                .map(|_| {
                    let host = match rng.u8(0..3) {
                        0 => HostMatch::Any,
                        1 => HostMatch::Exact(HOSTS[rng.usize(..HOSTS.len())].to_owned()),
                        _ => HostMatch::Suffix(SUFFIXES[rng.usize(..SUFFIXES.len())].to_owned()),
                    };
                    Route {
                        host,
                        ..route("*", PATHS[rng.usize(..PATHS.len())])
                    }
                })
                .collect();
            let table = RouteTable::new(&routes);
            for host in REQUEST_HOSTS {
                for path in REQUEST_PATHS {
                    assert_eq!(
                        table.lookup(host, path.as_bytes()),
                        scan(&routes, host, path.as_bytes()),
                        "seed {seed}: {host} {path} in {routes:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 300 * 14 * 10);
    }

    /// Many routes with random names: the table agrees with the scan on
    /// each route's own host and path and on random requests around them.
    #[test]
    fn agrees_with_a_scan_on_large_random_configurations() {
        let label = |rng: &mut fastrand::Rng| -> String {
            (0..rng.usize(1..4))
                .map(|_| ["a", "b", "ab", "c"][rng.usize(..4)])
                .collect::<Vec<_>>()
                .join(".")
        };
        for seed in 0..10 {
            let mut rng = fastrand::Rng::with_seed(1000 + seed);
            let routes: Vec<Route> = (0..500)
                .map(|_| {
                    let host = match rng.u8(0..10) {
                        0 => HostMatch::Any,
                        1..=5 => HostMatch::Exact(label(&mut rng)),
                        _ => HostMatch::Suffix(format!(".{}", label(&mut rng))),
                    };
                    let path = format!("/{}", label(&mut rng).replace('.', "/"));
                    Route {
                        host,
                        ..route("*", &path)
                    }
                })
                .collect();
            let table = RouteTable::new(&routes);
            let own = routes.iter().map(|r| {
                let host = match &r.host {
                    HostMatch::Any => String::new(),
                    HostMatch::Exact(h) => h.clone(),
                    HostMatch::Suffix(s) => format!("x{s}"),
                };
                (host, r.path.clone())
            });
            let around = (0..2000).map(|_| {
                let host = match rng.u8(0..4) {
                    0 => format!("{}.{}", label(&mut rng), label(&mut rng)),
                    _ => label(&mut rng),
                };
                let tail = ["", "/", "x"][rng.usize(..3)];
                (
                    host,
                    format!("/{}{tail}", label(&mut rng).replace('.', "/")),
                )
            });
            for (host, path) in own.collect::<Vec<_>>().into_iter().chain(around) {
                assert_eq!(
                    table.lookup(&host, path.as_bytes()),
                    scan(&routes, &host, path.as_bytes()),
                    "seed {seed}: {host} {path}"
                );
            }
        }
    }
}
