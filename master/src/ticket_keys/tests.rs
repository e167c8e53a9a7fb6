use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn key(fill: u8) -> TicketKey {
    TicketKey::new([fill; KEY_NAME_LEN], [fill ^ 0xa5; KEY_SECRET_LEN])
}

/// Fresh keys numbered from `first`, as the edge would make them.
fn keys_from(first: u8) -> impl FnMut() -> io::Result<TicketKey> {
    let mut n = first;
    move || {
        n += 1;
        Ok(key(n - 1))
    }
}

fn names(ring: &TicketKeyRing) -> (u8, Vec<u8>) {
    (
        ring.current.name()[0],
        ring.accepted.iter().map(|k| k.name()[0]).collect(),
    )
}

#[test]
fn new_keys_seal_with_the_first_and_accept_the_next() {
    let t0 = Instant::now();
    let keys = TicketKeys::new(t0, 12 * HOUR, key(1), key(2));
    assert_eq!(names(&keys.ring()), (1, vec![2]));
    assert_eq!(keys.rotate_at(), t0 + 12 * HOUR);
    assert_eq!(keys.ring().lifetime, 12 * HOUR);
}

#[test]
fn a_rotation_promotes_the_next_key_and_keeps_one_previous() {
    let t0 = Instant::now();
    let mut keys = TicketKeys::new(t0, 12 * HOUR, key(1), key(2));
    let mut fresh = keys_from(3);
    assert!(!keys.rotate_if_due(t0 + 11 * HOUR, &mut fresh).unwrap());
    assert_eq!(names(&keys.ring()), (1, vec![2]));

    assert!(keys.rotate_if_due(t0 + 12 * HOUR, &mut fresh).unwrap());
    assert_eq!(names(&keys.ring()), (2, vec![3, 1]));
    assert_eq!(keys.rotate_at(), t0 + 24 * HOUR);

    assert!(keys.rotate_if_due(t0 + 24 * HOUR, &mut fresh).unwrap());
    assert_eq!(names(&keys.ring()), (3, vec![4, 2]), "key 1 retired");
}

#[test]
fn every_ticket_opens_for_its_whole_lifetime() {
    // A ticket sealed at any moment opens until its lifetime ends, checked
    // every 10 minutes over three days of rotations.
    let t0 = Instant::now();
    let step = Duration::from_secs(600);
    let mut keys = TicketKeys::new(t0, 12 * HOUR, key(1), key(2));
    let mut fresh = keys_from(3);
    let mut sealed: Vec<(Instant, u8)> = Vec::new();
    for i in 0..(72 * 6) {
        let now = t0 + step * i;
        keys.rotate_if_due(now, &mut fresh).unwrap();
        let ring = keys.ring();
        sealed.push((now, ring.current.name()[0]));
        for (at, name) in &sealed {
            if now < *at + ring.lifetime {
                assert!(
                    ring.find(&[*name; KEY_NAME_LEN]).is_some(),
                    "key {name} at {i}"
                );
            }
        }
    }
}

#[test]
fn a_late_rotation_counts_the_next_interval_from_when_it_ran() {
    let t0 = Instant::now();
    let mut keys = TicketKeys::new(t0, HOUR, key(1), key(2));
    assert!(keys.rotate_if_due(t0 + 5 * HOUR, keys_from(3)).unwrap());
    assert_eq!(keys.rotate_at(), t0 + 6 * HOUR);
    assert!(!keys.rotate_if_due(t0 + 5 * HOUR, keys_from(4)).unwrap());
}

#[test]
fn without_fresh_keys_nothing_changes_until_the_retry() {
    let t0 = Instant::now();
    let mut keys = TicketKeys::new(t0, HOUR, key(1), key(2));
    let failed = keys.rotate_if_due(t0 + HOUR, || Err(io::Error::other("no entropy")));
    assert!(failed.is_err());
    assert_eq!(names(&keys.ring()), (1, vec![2]));
    keys.postpone(t0 + HOUR + RETRY);
    assert!(!keys.rotate_if_due(t0 + HOUR, keys_from(3)).unwrap());
    assert!(keys.rotate_if_due(t0 + HOUR + RETRY, keys_from(3)).unwrap());
    assert_eq!(names(&keys.ring()), (2, vec![3, 1]));
}

#[test]
fn a_new_interval_applies_from_now_and_changes_the_lifetime() {
    let t0 = Instant::now();
    let mut keys = TicketKeys::new(t0, 12 * HOUR, key(1), key(2));
    assert!(!keys.set_interval(t0 + HOUR, 12 * HOUR));
    assert!(keys.set_interval(t0 + HOUR, HOUR));
    assert_eq!(keys.rotate_at(), t0 + 2 * HOUR);
    assert_eq!(keys.ring().lifetime, HOUR);
    // Longer: the rotation already planned stays.
    assert!(keys.set_interval(t0 + HOUR, 24 * HOUR));
    assert_eq!(keys.rotate_at(), t0 + 2 * HOUR);
    keys.rotate_if_due(t0 + 2 * HOUR, keys_from(3)).unwrap();
    assert_eq!(keys.rotate_at(), t0 + 26 * HOUR);
}

#[test]
fn the_lifetime_fits_tls13s_cap() {
    let keys = TicketKeys::new(Instant::now(), 30 * 24 * HOUR, key(1), key(2));
    assert_eq!(keys.lifetime(), 7 * 24 * HOUR);
}

#[test]
fn a_new_master_takes_the_keys_and_the_schedule() {
    let t0 = Instant::now();
    let mut old = TicketKeys::new(t0, 12 * HOUR, key(1), key(2));
    old.rotate_if_due(t0 + 12 * HOUR, keys_from(3)).unwrap();
    let sent = old.encode(t0 + 15 * HOUR);

    // The new master's clock is its own.
    let t1 = t0 + 100 * HOUR;
    let new = TicketKeys::decode(&sent, t1, 12 * HOUR).unwrap();
    assert_eq!(new.ring(), old.ring());
    assert_eq!(new.rotate_at(), t1 + 9 * HOUR);
    // Both rotate to the same key: tickets of either master's workers open
    // on the other's.
    let (mut old, mut new) = (old, new);
    old.rotate_if_due(t0 + 24 * HOUR, keys_from(10)).unwrap();
    new.rotate_if_due(t1 + 9 * HOUR, keys_from(20)).unwrap();
    assert_eq!(old.ring().current, new.ring().current);
    assert!(new.ring().find(old.ring().accepted[1].name()).is_some());
}

#[test]
fn fresh_keys_hand_over_too() {
    let t0 = Instant::now();
    let keys = TicketKeys::new(t0, HOUR, key(1), key(2));
    let new = TicketKeys::decode(&keys.encode(t0), t0, HOUR).unwrap();
    assert_eq!(new.ring(), keys.ring());
    // A shorter interval on the new master: it rotates on its own schedule.
    let new = TicketKeys::decode(&keys.encode(t0), t0, HOUR / 2).unwrap();
    assert_eq!(new.rotate_at(), t0 + HOUR / 2);
}

#[test]
fn a_damaged_hand_off_is_refused_without_showing_a_secret() {
    let t0 = Instant::now();
    let mut sent = TicketKeys::new(t0, HOUR, key(1), key(2)).encode(t0);
    for len in 0..sent.len() {
        let e = TicketKeys::decode(&sent[..len], t0, HOUR).err();
        assert!(e.is_some(), "cut to {len}");
    }
    let mut longer = sent.clone();
    longer.push(0);
    assert_eq!(
        TicketKeys::decode(&longer, t0, HOUR).err(),
        Some(DecodeError::Length(longer.len()))
    );
    sent[MAGIC.len() - 2] = b'9';
    let e = TicketKeys::decode(&sent, t0, HOUR).err().unwrap();
    assert_eq!(e, DecodeError::Format);
    assert!(!e.to_string().contains("a5"), "{e}");
}

#[test]
fn fresh_keys_come_from_the_system_and_differ() {
    let (a, b) = (fresh_key().unwrap(), fresh_key().unwrap());
    assert_ne!(a.name(), b.name());
    assert_ne!(a.secret(), b.secret());
    assert_ne!(a.secret(), &[0; KEY_SECRET_LEN]);
}
