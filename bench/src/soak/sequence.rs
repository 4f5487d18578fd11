//! One numbered stream as one client sees it: every number once, in order, from the first one it
//! received after (re)connecting. No I/O: fed the numbers, it counts.

/// Gaps remembered so that a late number is told apart from a duplicate; older gaps are
/// forgotten (a number arriving that late counts as a duplicate, which is noticed either way).
const MISSING_KEPT: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Numbers received for the first time (in order or late).
    pub delivered: u64,
    /// Numbers skipped over and not (yet) received.
    pub lost: u64,
    pub duplicates: u64,
    /// Numbers received after a higher one (each was first counted lost, then found).
    pub reordered: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
    }
}

#[derive(Clone, Debug, Default)]
pub struct Sequence {
    /// The number expected next; `None` until the first one arrives (that one is the baseline).
    next: Option<u64>,
    /// The first number received: anything below it was sent before this client could get it.
    base: u64,
    /// Numbers skipped and not received yet, oldest first.
    missing: Vec<u64>,
}

impl Sequence {
    /// Accounts for number `n` in `c`.
    pub fn receive(&mut self, n: u64, c: &mut Counts) {
        let Some(next) = self.next else {
            self.next = Some(n + 1);
            self.base = n;
            c.delivered += 1;
            return;
        };
        if n == next {
            c.delivered += 1;
            self.next = Some(n + 1);
        } else if n > next {
            c.lost += n - next;
            c.delivered += 1;
            for m in next..n {
                if self.missing.len() == MISSING_KEPT {
                    self.missing.remove(0);
                }
                self.missing.push(m);
            }
            self.next = Some(n + 1);
        } else if let Some(i) = self.missing.iter().position(|m| *m == n) {
            self.missing.remove(i);
            c.lost -= 1;
            c.reordered += 1;
            c.delivered += 1;
        } else if n < self.base {
            // Sent before the baseline but delivered after it.
            c.reordered += 1;
            c.delivered += 1;
            self.base = n;
        } else {
            c.duplicates += 1;
        }
    }

    /// Numbers up to `last` (the last one sent) that never arrived after the baseline: the
    /// tail lost at the end of the run. Zero when nothing arrived at all.
    pub fn missing_up_to(&self, last: u64) -> u64 {
        match self.next {
            Some(next) if last >= next => last - next + 1,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(ns: &[u64]) -> (Sequence, Counts) {
        let (mut s, mut c) = (Sequence::default(), Counts::default());
        for n in ns {
            s.receive(*n, &mut c);
        }
        (s, c)
    }

    #[test]
    fn the_first_number_is_the_baseline_and_in_order_numbers_count_delivered() {
        let (s, c) = feed(&[7, 8, 9]);
        assert_eq!(c, Counts { delivered: 3, ..Default::default() });
        assert_eq!(s.missing_up_to(9), 0);
        assert_eq!(s.missing_up_to(12), 3);
    }

    #[test]
    fn a_gap_counts_lost_and_a_late_number_turns_it_into_reordered() {
        let (_, c) = feed(&[1, 2, 5, 3]);
        assert_eq!(c, Counts { delivered: 4, lost: 1, duplicates: 0, reordered: 1 });
    }

    #[test]
    fn a_number_seen_twice_is_a_duplicate() {
        let (_, c) = feed(&[1, 2, 2, 3, 1]);
        assert_eq!(c, Counts { delivered: 3, duplicates: 2, ..Default::default() });
    }

    #[test]
    fn a_number_below_the_baseline_is_reordered_not_duplicate() {
        let (_, c) = feed(&[5, 4, 6]);
        assert_eq!(c, Counts { delivered: 3, reordered: 1, ..Default::default() });
    }

    #[test]
    fn nothing_received_means_no_tail_to_count() {
        assert_eq!(Sequence::default().missing_up_to(10), 0);
    }
}
