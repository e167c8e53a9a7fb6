//! Which reload path a new configuration takes.

use prefork_shared::Config;

/// How a reload is carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadPath {
    /// The running workers take the new configuration over IPC, between
    /// requests: only routes, upstreams, timeouts, logs (or master-only keys
    /// such as the pid file) changed.
    Hot,
    /// A new generation of workers starts and the old one drains; the
    /// strings name the keys that require it.
    NewGeneration(Vec<&'static str>),
}

/// Compares the running configuration with a new, valid one.
///
/// Listeners (their addresses and `reuseport`; a backlog or `defer_accept`
/// change is applied to the open sockets), the worker count, the user and
/// the CPU pinning need new processes; everything else a running worker can
/// swap in.
pub fn reload_path(old: &Config, new: &Config) -> ReloadPath {
    let sockets =
        |c: &Config| -> Vec<_> { c.listen.iter().map(|l| (l.addr, l.reuseport)).collect() };
    let mut why = Vec::new();
    if sockets(old) != sockets(new) {
        why.push("listen");
    }
    if old.workers != new.workers {
        why.push("workers");
    }
    if old.user != new.user {
        why.push("user");
    }
    // A worker pins itself (and the threads it starts) as it starts.
    if old.worker_cpu_affinity != new.worker_cpu_affinity {
        why.push("worker_cpu_affinity");
    }
    if why.is_empty() {
        ReloadPath::Hot
    } else {
        ReloadPath::NewGeneration(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefork_shared::config::{parse, LogTarget};
    use std::path::Path;
    use std::time::Duration;

    fn config(text: &str) -> Config {
        parse(Path::new("t.toml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    const BASE: &str = "workers = 2\n[[listen]]\naddr = \"127.0.0.1:8080\"\n\
        [upstreams.a]\nservers = [\"127.0.0.1:9000\"]\n\
        [[routes]]\nhost = \"a.test\"\nupstream = \"a\"\n";

    #[test]
    fn routes_upstreams_timeouts_and_logs_are_hot() {
        let old = config(BASE);
        let mut new = old.clone();
        new.routes.clear();
        new.upstreams.clear();
        new.shutdown_timeout = Duration::from_secs(1);
        new.worker_timeout = Duration::from_secs(1);
        new.http.keepalive_timeout = Duration::from_secs(1);
        new.log.access_log = Some(LogTarget::Stdout);
        new.pid_file = "/elsewhere.pid".into();
        new.listen[0].backlog = 7;
        assert_eq!(reload_path(&old, &new), ReloadPath::Hot);
        assert_eq!(reload_path(&old, &old), ReloadPath::Hot);
    }

    #[test]
    fn listeners_workers_user_and_cpu_pinning_need_a_new_generation() {
        let old = config(BASE);
        let changed = |edit: &dyn Fn(&mut Config)| {
            let mut new = old.clone();
            edit(&mut new);
            reload_path(&old, &new)
        };
        assert_eq!(
            changed(&|c| c.listen[0].addr = "127.0.0.1:8081".parse().unwrap()),
            ReloadPath::NewGeneration(vec!["listen"])
        );
        assert_eq!(
            changed(&|c| c.listen.push(c.listen[0].clone())),
            ReloadPath::NewGeneration(vec!["listen"])
        );
        assert_eq!(
            changed(&|c| c.listen[0].reuseport = true),
            ReloadPath::NewGeneration(vec!["listen"])
        );
        assert_eq!(
            changed(&|c| c.workers = 3),
            ReloadPath::NewGeneration(vec!["workers"])
        );
        assert_eq!(
            changed(&|c| {
                c.user = Some("nobody".into());
                c.workers = 1;
            }),
            ReloadPath::NewGeneration(vec!["workers", "user"])
        );
        assert_eq!(
            changed(&|c| c.worker_cpu_affinity = vec![0]),
            ReloadPath::NewGeneration(vec!["worker_cpu_affinity"])
        );
    }

    #[test]
    fn a_reuseport_listener_rolls_a_generation_for_slots_not_for_its_backlog() {
        let mut old = config(BASE);
        old.listen[0].reuseport = true;
        let mut new = old.clone();
        new.listen[0].backlog = 7;
        assert_eq!(reload_path(&old, &new), ReloadPath::Hot);
        // One socket per slot: a new worker count means new sockets.
        new.workers = 3;
        assert_eq!(
            reload_path(&old, &new),
            ReloadPath::NewGeneration(vec!["workers"])
        );
        let mut off = old.clone();
        off.listen[0].reuseport = false;
        assert_eq!(
            reload_path(&old, &off),
            ReloadPath::NewGeneration(vec!["listen"])
        );
    }
}
