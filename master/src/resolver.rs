//! Upstream host names resolved again while the master runs (`resolve`,
//! nginx's `resolve` on a server): off the loop thread, every address kept;
//! what changed reaches the running workers as a hot reload would.

use prefork_shared::config::{resolve_server, Server};
use prefork_shared::Config;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// What one round found: per host name as written (`host:port`), its
/// addresses, or why none.
pub type Found = BTreeMap<String, Result<Vec<SocketAddr>, String>>;

/// The host names to resolve in `config`: those of groups with `resolve`.
pub fn names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for group in config.upstreams.values().filter(|u| u.resolve.is_some()) {
        for name in group.host_names() {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// How often to resolve: the shortest `resolve` among groups that name a
/// host; `None` when none does.
pub fn interval(config: &Config) -> Option<Duration> {
    config
        .upstreams
        .values()
        .filter(|u| !u.host_names().is_empty())
        .filter_map(|u| u.resolve)
        .min()
}

/// Resolves every name in `names` (blocking: DNS).
pub fn resolve(names: &[String]) -> Found {
    names
        .iter()
        .map(|name| (name.clone(), resolve_server(name)))
        .collect()
}

/// `config` with the addresses `found` (a name that failed keeps its
/// servers: a resolver down for a moment must not empty a group), or
/// `None` when no group with `resolve` changed.
pub fn apply(config: &Config, found: &Found) -> Option<Config> {
    let mut changed = false;
    let mut next = config.clone();
    for group in next.upstreams.values_mut().filter(|u| u.resolve.is_some()) {
        let mut servers: Vec<Server> = Vec::new();
        let mut done: Vec<&str> = Vec::new();
        for s in &group.servers {
            if done.contains(&s.name.as_str()) {
                continue;
            }
            done.push(&s.name);
            match found.get(&s.name) {
                Some(Ok(addrs)) => servers.extend(addrs.iter().map(|&addr| Server {
                    name: s.name.clone(),
                    addr,
                    weight: s.weight,
                })),
                _ => servers.extend(group.servers.iter().filter(|o| o.name == s.name).cloned()),
            }
        }
        if servers != group.servers {
            group.servers = servers;
            changed = true;
        }
    }
    changed.then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_shared::config::parse;
    use std::path::Path;

    fn config(text: &str) -> Config {
        parse(Path::new("t.toml"), text).expect("config")
    }

    fn addrs(list: &[&str]) -> Result<Vec<SocketAddr>, String> {
        Ok(list.iter().map(|a| a.parse().unwrap()).collect())
    }

    const TEXT: &str =
        "[upstreams.a]\nservers = [\"localhost:8080\", { addr = \"127.0.0.9:1\", weight = 3 }]\n\
                        [upstreams.b]\nservers = [\"localhost:8080\"]\nresolve = \"off\"\n\
                        [upstreams.c]\nservers = [\"127.0.0.1:2\"]\nresolve = \"5s\"\n";

    #[test]
    fn names_and_interval_come_from_groups_that_resolve_and_name_a_host() {
        let c = config(TEXT);
        assert_eq!(names(&c), vec!["localhost:8080".to_owned()]);
        // c's 5 s does not count: it names no host.
        assert_eq!(interval(&c), Some(prefork_shared::config::DEFAULT_RESOLVE));
    }

    #[test]
    fn every_address_found_becomes_a_server_with_the_name_and_weight() {
        let c = config(TEXT);
        let found = Found::from([(
            "localhost:8080".to_owned(),
            addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]),
        )]);
        let next = apply(&c, &found).expect("a change");
        let a: Vec<(String, String, u32)> = next.upstreams["a"]
            .servers
            .iter()
            .map(|s| (s.name.clone(), s.addr.to_string(), s.weight))
            .collect();
        assert_eq!(
            a,
            vec![
                ("localhost:8080".into(), "10.0.0.1:8080".into(), 1),
                ("localhost:8080".into(), "10.0.0.2:8080".into(), 1),
                ("127.0.0.9:1".into(), "127.0.0.9:1".into(), 3),
            ]
        );
        // A group with resolve = "off" keeps what the reload found.
        assert_eq!(next.upstreams["b"], c.upstreams["b"]);
        // Found again, the same: nothing to do.
        assert_eq!(apply(&next, &found), None);
    }

    #[test]
    fn a_name_that_fails_keeps_its_servers() {
        let c = config(TEXT);
        let found = Found::from([("localhost:8080".to_owned(), Err("timeout".to_owned()))]);
        assert_eq!(apply(&c, &found), None);
    }
}
