//! Replay protection for sealed messages that may arrive out of order.

/// Accepts each counter at most once: anything above the highest seen, or
/// one of the [`ReplayWindow::SIZE`] counters below it not yet seen (the
/// sliding-window check of RFC 6479 / IPsec, with a 64-bit map). On a stream
/// (TCP, serial) counters arrive in order and the map is never needed; on
/// lossy links a late message within the window is still accepted once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: Option<u64>,
    /// Bit `i` set: counter `highest − i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// How far below the highest counter a late message is still accepted.
    pub const SIZE: u64 = 64;

    /// A window that has accepted nothing.
    pub const fn new() -> Self {
        Self {
            highest: None,
            seen: 0,
        }
    }

    /// True if `counter` would be accepted now (does not record it).
    pub fn check(&self, counter: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) if counter > h => true,
            Some(h) => {
                let age = h - counter;
                age < Self::SIZE && self.seen & (1 << age) == 0
            }
        }
    }

    /// Records `counter` as accepted; call only after [`check`](Self::check)
    /// passed and the message authenticated (a forged counter must not move
    /// the window). Returns false, recording nothing, if it is not
    /// acceptable.
    pub fn accept(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        match self.highest {
            None => {
                self.highest = Some(counter);
                self.seen = 1;
            }
            Some(h) if counter > h => {
                let shift = counter - h;
                self.seen = if shift >= Self::SIZE {
                    0
                } else {
                    self.seen << shift
                };
                self.seen |= 1;
                self.highest = Some(counter);
            }
            Some(h) => self.seen |= 1 << (h - counter),
        }
        true
    }

    /// The highest counter accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::ReplayWindow;

    #[test]
    fn in_order_counters_are_accepted_once() {
        let mut w = ReplayWindow::new();
        for c in 0..200 {
            assert!(w.accept(c), "{c}");
            assert!(!w.accept(c), "{c} twice");
        }
        assert_eq!(w.highest(), Some(199));
    }

    #[test]
    fn late_counters_inside_the_window_are_accepted_once() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(100));
        assert!(w.accept(90));
        assert!(!w.accept(90));
        assert!(w.accept(37), "age 63 is inside");
        assert!(!w.accept(36), "age 64 is outside");
        assert!(w.accept(101));
        assert!(!w.accept(100));
        assert!(
            !w.accept(90),
            "still remembered after the window slid by one"
        );
    }

    #[test]
    fn a_big_jump_forgets_everything_below_the_window() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(5));
        assert!(w.accept(1_000));
        assert!(!w.accept(5));
        assert!(w.accept(999));
        assert!(w.accept(u64::MAX));
        assert!(!w.accept(u64::MAX));
        assert!(!w.accept(1_000));
    }

    #[test]
    fn check_records_nothing() {
        let mut w = ReplayWindow::new();
        assert!(w.check(3));
        assert!(w.check(3));
        assert_eq!(w.highest(), None);
        assert!(w.accept(3));
        assert!(!w.check(3));
    }
}
