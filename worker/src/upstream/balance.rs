//! Choosing a server of an upstream group: smooth weighted round robin,
//! least connections, and the power of two random choices.
//!
//! The balancer only sees which servers are usable and how many requests
//! each has in flight; health and pooling live elsewhere.

use fastrand::Rng;
use prefork_shared::config::Balance;
use std::cell::RefCell;

/// A balancing policy with its state (one per group and worker).
pub(crate) struct Balancer {
    policy: Balance,
    weights: Vec<u64>,
    /// Smooth weighted round robin's running weights.
    current: RefCell<Vec<i64>>,
    rng: RefCell<Rng>,
}

impl Balancer {
    /// A balancer over servers with these weights (each at least 1).
    pub(crate) fn new(policy: Balance, weights: &[u32], rng: Rng) -> Self {
        Balancer {
            policy,
            weights: weights.iter().map(|&w| u64::from(w.max(1))).collect(),
            current: RefCell::new(vec![0; weights.len()]),
            rng: RefCell::new(rng),
        }
    }

    /// The next server among those `usable` says yes to, given each
    /// server's requests in flight (`load`); `None` when none is usable.
    pub(crate) fn pick(
        &self,
        usable: impl Fn(usize) -> bool,
        load: impl Fn(usize) -> usize,
    ) -> Option<usize> {
        if self.weights.len() == 1 {
            // Every policy picks the lone server when it is usable.
            return usable(0).then_some(0);
        }
        match self.policy {
            Balance::RoundRobin => self.smooth(&usable),
            Balance::LeastConn => {
                let best = (0..self.weights.len())
                    .filter(|&i| usable(i))
                    .min_by(|&a, &b| self.compare(a, b, &load))?;
                // Among equally loaded servers, weighted round robin keeps
                // the weights' proportions when the group is idle.
                self.smooth(&|i| usable(i) && self.compare(i, best, &load).is_eq())
            }
            Balance::RandomTwo => {
                let a = self.draw(&usable)?;
                let Some(b) = self.draw(&|i| i != a && usable(i)) else {
                    return Some(a);
                };
                Some(if self.compare(b, a, &load).is_lt() {
                    b
                } else {
                    a
                })
            }
        }
    }

    /// Orders two servers by requests in flight per unit of weight.
    fn compare(&self, a: usize, b: usize, load: &impl Fn(usize) -> usize) -> std::cmp::Ordering {
        let (la, lb) = (load(a) as u64, load(b) as u64);
        (la * self.weights[b]).cmp(&(lb * self.weights[a]))
    }

    /// nginx's smooth weighted round robin over the usable servers: each
    /// gains its weight, the highest runs and pays the total back. It
    /// interleaves (a,a,b,a for 3:1) instead of sending bursts.
    fn smooth(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let mut current = self.current.borrow_mut();
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, &w) in self.weights.iter().enumerate() {
            if !usable(i) {
                continue;
            }
            current[i] += w as i64;
            total += w as i64;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }

    /// One usable server drawn at random in proportion to its weight.
    fn draw(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let total: u64 = (0..self.weights.len())
            .filter(|&i| usable(i))
            .map(|i| self.weights[i])
            .sum();
        if total == 0 {
            return None;
        }
        let mut ticket = self.rng.borrow_mut().u64(0..total);
        for (i, &w) in self.weights.iter().enumerate() {
            if !usable(i) {
                continue;
            }
            if ticket < w {
                return Some(i);
            }
            ticket -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(policy: Balance, weights: &[u32]) -> Balancer {
        Balancer::new(policy, weights, Rng::with_seed(7))
    }

    /// How many of `n` idle picks each server gets.
    fn counts(b: &Balancer, n: usize, usable: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut out = vec![0; b.weights.len()];
        for _ in 0..n {
            out[b.pick(&usable, |_| 0).expect("a usable server")] += 1;
        }
        out
    }

    #[test]
    fn round_robin_follows_weights_smoothly() {
        let b = balancer(Balance::RoundRobin, &[1, 1, 1]);
        let order: Vec<usize> = (0..6).map(|_| b.pick(|_| true, |_| 0).unwrap()).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);

        let b = balancer(Balance::RoundRobin, &[5, 1, 1]);
        let order: Vec<usize> = (0..7).map(|_| b.pick(|_| true, |_| 0).unwrap()).collect();
        // nginx's documented sequence for weights 5, 1, 1.
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&b, 700, |_| true), [500, 100, 100]);
    }

    #[test]
    fn unusable_servers_are_skipped_and_none_left_means_none() {
        for policy in [Balance::RoundRobin, Balance::LeastConn, Balance::RandomTwo] {
            let b = balancer(policy, &[3, 1, 2]);
            let c = counts(&b, 90, |i| i != 0);
            assert_eq!((c[0], c[1] + c[2]), (0, 90), "{policy:?}");
            if policy != Balance::RandomTwo {
                assert_eq!(c, [0, 30, 60], "{policy:?}");
            }
            assert_eq!(counts(&b, 10, |i| i == 1), [0, 10, 0], "{policy:?}");
            assert_eq!(b.pick(|_| false, |_| 0), None, "{policy:?}");
        }
    }

    #[test]
    fn a_lone_server_is_picked_while_usable() {
        for policy in [Balance::RoundRobin, Balance::LeastConn, Balance::RandomTwo] {
            let b = balancer(policy, &[5]);
            assert_eq!(b.pick(|_| true, |_| 3), Some(0));
            assert_eq!(b.pick(|_| false, |_| 0), None);
        }
    }

    #[test]
    fn least_conn_prefers_the_least_loaded_per_weight() {
        let b = balancer(Balance::LeastConn, &[1, 1, 1]);
        let load = [4, 1, 2];
        assert_eq!(b.pick(|_| true, |i| load[i]), Some(1));
        // Weight 4 with 3 in flight is less busy than weight 1 with 1.
        let b = balancer(Balance::LeastConn, &[1, 4]);
        let load = [1, 3];
        assert_eq!(b.pick(|_| true, |i| load[i]), Some(1));
        // Ties (2 per weight 2, 1 per weight 1) are shared by weight.
        let b = balancer(Balance::LeastConn, &[2, 1, 1]);
        let load = [2, 1, 5];
        let mut got = [0; 3];
        for _ in 0..30 {
            got[b.pick(|_| true, |i| load[i]).unwrap()] += 1;
        }
        assert_eq!(got, [20, 10, 0]);
    }

    #[test]
    fn random_two_splits_by_weight_and_avoids_the_busy_server() {
        let b = balancer(Balance::RandomTwo, &[3, 1]);
        // Idle group: two distinct servers are drawn, so every pick is a
        // tie won by the first draw (weighted).
        let c = counts(&b, 4000, |_| true);
        assert!((2800..=3200).contains(&c[0]), "{c:?}");
        // A busy server loses every comparison it takes part in.
        let b = balancer(Balance::RandomTwo, &[1, 1, 1, 1]);
        let load = [9, 0, 0, 0];
        let mut got = [0; 4];
        for _ in 0..4000 {
            got[b.pick(|_| true, |i| load[i]).unwrap()] += 1;
        }
        assert_eq!(got[0], 0, "{got:?}");
        for n in &got[1..] {
            assert!((1150..=1500).contains(n), "{got:?}");
        }
    }

    #[test]
    fn a_seeded_rng_gives_the_same_sequence() {
        let picks = |seed| {
            let b = Balancer::new(Balance::RandomTwo, &[1, 2, 3, 4], Rng::with_seed(seed));
            (0..50)
                .map(|_| b.pick(|_| true, |i| i % 2).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(42), picks(42));
    }
}
