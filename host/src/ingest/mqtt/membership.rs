//! Group membership: which workers of the group are alive, and which
//! partitions this worker owns and may therefore subscribe to.
//!
//! [`Membership`] is a state machine with no broker and no clock of its
//! own: the worker feeds it connection changes, presence messages and the
//! current time, and asks it when and how to rebalance. Its rules (wait
//! for the group's presence to settle before subscribing, act on a
//! departure only once it has held) are tested here by passing instants.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use latentcam_wire::mqtt::{PARTITIONS, owner};

/// After (re)connecting, how long to read the retained worker list before
/// choosing partitions, so a joining worker does not grab all of them.
/// Also how long a departure must hold before its partitions are taken.
pub(super) const SETTLE: Duration = Duration::from_millis(1500);

/// The partitions `me` owns when `members` are the group's live workers
/// (rendezvous hashing, [`owner`]).
pub(super) fn partitions_of<'a>(
    me: &str,
    members: impl IntoIterator<Item = &'a str> + Clone,
) -> BTreeSet<u16> {
    (0..PARTITIONS)
        .filter(|&p| owner(p, members.clone()) == Some(me))
        .collect()
}

/// What a presence message (`latentcam/_workers/<group>/<name>`) meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Presence {
    /// This worker's own presence, still there: nothing to do.
    Own,
    /// This worker's own presence was cleared (its last will, fired for an
    /// earlier connection): it is alive, so it must announce itself again.
    OwnCleared,
    /// Nothing changed (a member already known, or an unknown one leaving).
    Unchanged,
    /// A new member: rebalance at once.
    Joined,
    /// A member left: its partitions are taken once the departure has
    /// held for [`SETTLE`] (see [`Membership::tick`]).
    Left,
}

/// How the owned partitions change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rebalance {
    /// Every partition this worker owns from now on.
    pub(super) mine: BTreeSet<u16>,
    /// Owned now, not before: subscribe.
    pub(super) gained: Vec<u16>,
    /// Owned before, not now: unsubscribe.
    pub(super) lost: Vec<u16>,
}

/// This worker's view of its group.
#[derive(Debug)]
pub(super) struct Membership {
    /// This worker's name.
    me: String,
    /// Live workers, this one included while connected.
    members: BTreeSet<String>,
    /// Partitions subscribed to.
    owned: BTreeSet<u16>,
    /// Between a `ConnAck` and the next connection error: only then do
    /// subscriptions exist and may be changed.
    connected: bool,
    /// Until when the group's presence is still being read after a
    /// (re)connect; nothing is owned before.
    settle_until: Option<Instant>,
    /// When a member's departure was first seen and not yet acted on.
    departed_at: Option<Instant>,
}

impl Membership {
    /// A worker named `me`, not connected.
    pub(super) fn new(me: String) -> Self {
        Self {
            me,
            members: BTreeSet::new(),
            owned: BTreeSet::new(),
            connected: false,
            settle_until: None,
            departed_at: None,
        }
    }

    /// Whether a session with the broker exists (see `FromBroker`).
    pub(super) fn is_connected(&self) -> bool {
        self.connected
    }

    /// Live members, this worker included.
    pub(super) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Partitions currently subscribed to.
    pub(super) fn owned_count(&self) -> usize {
        self.owned.len()
    }

    /// Whether this worker answers for `partition` now: it owns it and is
    /// not re-reading the group's presence after a reconnect.
    pub(super) fn owns(&self, partition: u16) -> bool {
        self.settle_until.is_none() && self.owned.contains(&partition)
    }

    /// A new session at `now` (clean start: nothing is subscribed any
    /// more). The group is read again until `now + SETTLE`.
    pub(super) fn connected(&mut self, now: Instant) {
        self.connected = true;
        self.owned.clear();
        self.members.clear();
        self.members.insert(self.me.clone());
        self.settle_until = Some(now + SETTLE);
    }

    /// The session is gone with its subscriptions; a pending departure or
    /// settling is cancelled (the next connection starts both afresh).
    pub(super) fn disconnected(&mut self) {
        self.connected = false;
        self.owned.clear();
        self.settle_until = None;
        self.departed_at = None;
    }

    /// Worker `name` announced itself (`present`) or its presence was
    /// cleared, at `now`.
    pub(super) fn presence(&mut self, name: &str, present: bool, now: Instant) -> Presence {
        if name == self.me {
            return if present {
                Presence::Own
            } else {
                Presence::OwnCleared
            };
        }
        let changed = if present {
            self.members.insert(name.to_owned())
        } else {
            self.members.remove(name)
        };
        match (changed, present) {
            (false, _) => Presence::Unchanged,
            (true, true) => Presence::Joined,
            (true, false) => {
                // A broker shutting down fires every worker's last will
                // before it drops the connections: taking the partitions
                // at once would subscribe two workers to the same shares
                // for a moment, and both would process what arrives. Take
                // them once the departure has held for the settling time
                // (a disconnect cancels it).
                self.departed_at.get_or_insert(now);
                Presence::Left
            }
        }
    }

    /// Whether a rebalance is due at `now`: the settling after a connect
    /// is over, or a departure has held for [`SETTLE`].
    pub(super) fn tick(&mut self, now: Instant) -> bool {
        let mut due = false;
        if self.settle_until.is_some_and(|t| now >= t) {
            self.settle_until = None;
            due = true;
        }
        if self.departed_at.is_some_and(|t| now >= t + SETTLE) {
            self.departed_at = None;
            due = true;
        }
        due
    }

    /// The subscriptions to change, or `None` when nothing changes or
    /// nothing may be subscribed yet (disconnected or settling).
    pub(super) fn plan(&self) -> Option<Rebalance> {
        if !self.connected || self.settle_until.is_some() {
            return None;
        }
        let mine = partitions_of(&self.me, self.members.iter().map(String::as_str));
        let gained: Vec<u16> = mine.difference(&self.owned).copied().collect();
        let lost: Vec<u16> = self.owned.difference(&mine).copied().collect();
        if gained.is_empty() && lost.is_empty() {
            return None;
        }
        Some(Rebalance { mine, gained, lost })
    }

    /// The subscriptions of `plan` are made.
    pub(super) fn apply(&mut self, plan: Rebalance) {
        self.owned = plan.mine;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A worker connected at `t0` whose settling is over.
    fn settled(me: &str, t0: Instant) -> Membership {
        let mut m = Membership::new(me.to_owned());
        m.connected(t0);
        assert!(m.tick(t0 + SETTLE));
        m
    }

    #[test]
    fn nothing_is_owned_until_the_group_has_settled() {
        let t0 = Instant::now();
        let mut m = Membership::new("w1".into());
        assert_eq!(m.plan(), None, "not connected");
        m.connected(t0);
        assert_eq!(m.plan(), None, "settling");
        assert!(!m.tick(t0 + SETTLE - MS));
        assert_eq!(m.plan(), None);
        assert!(m.tick(t0 + SETTLE));
        let plan = m.plan().expect("alone, it owns everything");
        assert_eq!(plan.gained.len(), usize::from(PARTITIONS));
        assert!(plan.lost.is_empty());
        let p = plan.gained[0];
        assert!(!m.owns(p), "owned only once subscribed");
        m.apply(plan);
        assert!(m.owns(p));
        assert_eq!(m.owned_count(), usize::from(PARTITIONS));
        assert_eq!(m.plan(), None, "nothing changes any more");
        assert!(!m.tick(t0 + SETTLE * 10), "the settling fired once");
    }

    #[test]
    fn a_joining_worker_takes_its_partitions_at_once_and_the_split_is_whole() {
        let t0 = Instant::now();
        let mut a = settled("a", t0);
        a.apply(a.plan().unwrap());
        assert_eq!(a.presence("b", true, t0), Presence::Joined);
        assert_eq!(a.presence("b", true, t0), Presence::Unchanged);
        let plan = a.plan().expect("b joined: a gives some partitions up");
        assert!(plan.gained.is_empty());
        assert!(!plan.lost.is_empty());
        a.apply(plan);

        let mut b = settled("b", t0);
        b.presence("a", true, t0);
        b.apply(b.plan().unwrap());
        for p in 0..PARTITIONS {
            assert!(a.owns(p) != b.owns(p), "partition {p} must have one owner");
        }
        assert_eq!(a.member_count(), 2);
    }

    #[test]
    fn a_departure_is_acted_on_only_once_it_has_held() {
        let t0 = Instant::now();
        let mut a = settled("a", t0);
        a.presence("b", true, t0);
        a.apply(a.plan().unwrap());
        let before = a.owned_count();
        let t1 = t0 + SETTLE * 2;
        assert_eq!(a.presence("b", false, t1), Presence::Left);
        // The plan would take b's partitions, but nothing asks for it yet.
        assert!(!a.tick(t1 + SETTLE - MS));
        // A second departure does not push the deadline back.
        assert_eq!(a.presence("c", true, t1), Presence::Joined);
        assert_eq!(a.presence("c", false, t1 + SETTLE - MS), Presence::Left);
        assert!(a.tick(t1 + SETTLE));
        let plan = a.plan().unwrap();
        assert_eq!(before + plan.gained.len(), usize::from(PARTITIONS));
        a.apply(plan);
        assert!(!a.tick(t1 + SETTLE * 5));
    }

    #[test]
    fn a_disconnect_drops_the_partitions_and_cancels_a_pending_departure() {
        let t0 = Instant::now();
        let mut a = settled("a", t0);
        a.presence("b", true, t0);
        a.apply(a.plan().unwrap());
        a.presence("b", false, t0);
        a.disconnected();
        assert!(!a.is_connected());
        assert!((0..PARTITIONS).all(|p| !a.owns(p)));
        assert_eq!(
            a.plan(),
            None,
            "nothing may be subscribed while disconnected"
        );
        assert!(!a.tick(t0 + SETTLE * 10), "the departure was cancelled");

        // Reconnected: the group is read afresh, members included.
        let t1 = t0 + SETTLE * 20;
        a.connected(t1);
        assert_eq!(a.member_count(), 1);
        assert!(a.tick(t1 + SETTLE));
        assert_eq!(a.plan().unwrap().gained.len(), usize::from(PARTITIONS));
    }

    #[test]
    fn own_presence_is_never_a_member_change() {
        let t0 = Instant::now();
        let mut a = settled("a", t0);
        assert_eq!(a.presence("a", true, t0), Presence::Own);
        assert_eq!(a.presence("a", false, t0), Presence::OwnCleared);
        assert_eq!(a.member_count(), 1);
        assert!(!a.tick(t0 + SETTLE * 10), "not a departure");
        assert_eq!(a.presence("x", false, t0), Presence::Unchanged);
    }

    #[test]
    fn partitions_of_agrees_with_owner() {
        let members = ["a", "b", "c"];
        let mut all = BTreeSet::new();
        for me in members {
            let mine = partitions_of(me, members);
            for &p in &mine {
                assert_eq!(owner(p, members), Some(me));
            }
            assert!(all.is_disjoint(&mine));
            all.extend(mine);
        }
        assert_eq!(all.len(), usize::from(PARTITIONS));
        assert!(partitions_of("z", members).is_empty());
    }
}
