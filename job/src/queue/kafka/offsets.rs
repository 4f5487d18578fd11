//! Which offsets may be committed: per partition, the lowest delivered offset not yet acked (or,
//! when all are acked, one past the last delivered one). Everything below it was dispatched.
//!
//! Acks come out of order (a room push waits for its batch while later key pushes complete), so
//! the commit point only moves when the lowest pending offset is acked.

use std::collections::{BTreeMap, BTreeSet};

/// Ack tracking for the partitions this consumer holds.
#[derive(Debug, Default)]
pub(super) struct Offsets {
    partitions: BTreeMap<i32, Partition>,
}

#[derive(Debug)]
struct Partition {
    /// Delivered, not yet acked.
    pending: BTreeSet<i64>,
    /// One past the highest delivered offset.
    next: i64,
    /// The offset Kafka is known to hold for the group (the next one to consume), or the first
    /// offset delivered to us, which Kafka already holds or will reset to.
    committed: i64,
}

impl Partition {
    fn commit_point(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.next)
    }
}

/// Why an ack was not applied.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stale {
    /// The partition is not held (revoked since the delivery): its new owner redelivers.
    Partition,
    /// The offset is not pending: acked twice, or delivered before a revoke and a re-assign.
    Offset,
}

impl Offsets {
    pub(super) fn delivered(&mut self, partition: i32, offset: i64) {
        let p = self.partitions.entry(partition).or_insert(Partition {
            pending: BTreeSet::new(),
            next: offset,
            committed: offset,
        });
        p.pending.insert(offset);
        p.next = p.next.max(offset + 1);
    }

    /// Marks `offset` done. Returns whether the partition's commit point moved.
    pub(super) fn acked(&mut self, partition: i32, offset: i64) -> Result<bool, Stale> {
        let p = self.partitions.get_mut(&partition).ok_or(Stale::Partition)?;
        let before = p.commit_point();
        if !p.pending.remove(&offset) {
            return Err(Stale::Offset);
        }
        Ok(p.commit_point() != before)
    }

    /// Partitions whose commit point is past what Kafka holds, with that point.
    pub(super) fn uncommitted(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.commit_point() > p.committed)
            .map(|(&partition, p)| (partition, p.commit_point()))
            .collect()
    }

    /// Whether any partition's commit point is past what Kafka holds.
    pub(super) fn any_uncommitted(&self) -> bool {
        self.partitions.values().any(|p| p.commit_point() > p.committed)
    }

    /// Kafka confirmed it holds `offset` for `partition`.
    pub(super) fn committed(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.committed = p.committed.max(offset);
        }
    }

    /// Stops tracking `partitions` (revoked). Returns what should be committed for them first.
    pub(super) fn revoke(&mut self, partitions: &[i32]) -> Vec<(i32, i64)> {
        let mut commit = Vec::new();
        for partition in partitions {
            if let Some(p) = self.partitions.remove(partition)
                && p.commit_point() > p.committed
            {
                commit.push((*partition, p.commit_point()));
            }
        }
        commit
    }

    /// Deliveries not yet acked, over all partitions.
    pub(super) fn pending(&self) -> usize {
        self.partitions.values().map(|p| p.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_committed_before_the_first_ack() {
        let mut o = Offsets::default();
        o.delivered(0, 10);
        o.delivered(0, 11);
        assert_eq!(o.uncommitted(), []);
        assert!(!o.any_uncommitted());
        assert_eq!(o.pending(), 2);
    }

    #[test]
    fn in_order_acks_advance_the_commit_point_one_past_the_acked_offset() {
        let mut o = Offsets::default();
        o.delivered(0, 10);
        o.delivered(0, 11);
        assert_eq!(o.acked(0, 10), Ok(true));
        assert_eq!(o.uncommitted(), [(0, 11)]);
        assert!(o.any_uncommitted());
        assert_eq!(o.acked(0, 11), Ok(true));
        assert_eq!(o.uncommitted(), [(0, 12)]);
    }

    #[test]
    fn an_out_of_order_ack_waits_for_the_lower_offsets() {
        let mut o = Offsets::default();
        for offset in 10..14 {
            o.delivered(0, offset);
        }
        assert_eq!(o.acked(0, 12), Ok(false));
        assert_eq!(o.acked(0, 11), Ok(false));
        assert_eq!(o.uncommitted(), [], "10 is still in flight");
        assert_eq!(o.acked(0, 10), Ok(true));
        assert_eq!(o.uncommitted(), [(0, 13)], "13 is still in flight");
    }

    #[test]
    fn partitions_are_tracked_independently() {
        let mut o = Offsets::default();
        o.delivered(0, 5);
        o.delivered(1, 100);
        o.delivered(1, 101);
        o.acked(1, 100).unwrap();
        assert_eq!(o.uncommitted(), [(1, 101)]);
        o.acked(0, 5).unwrap();
        assert_eq!(o.uncommitted(), [(0, 6), (1, 101)]);
    }

    #[test]
    fn a_confirmed_commit_is_not_committed_again() {
        let mut o = Offsets::default();
        o.delivered(0, 1);
        o.acked(0, 1).unwrap();
        o.committed(0, 2);
        assert_eq!(o.uncommitted(), []);
        o.committed(0, 1);
        assert_eq!(o.uncommitted(), [], "a late confirmation of an older commit does not move back");
    }

    #[test]
    fn a_double_ack_or_an_ack_for_a_revoked_partition_is_stale() {
        let mut o = Offsets::default();
        o.delivered(0, 1);
        o.acked(0, 1).unwrap();
        assert_eq!(o.acked(0, 1), Err(Stale::Offset));
        assert_eq!(o.acked(7, 1), Err(Stale::Partition));
    }

    #[test]
    fn revoking_returns_the_contiguous_commit_point_and_forgets_the_partition() {
        let mut o = Offsets::default();
        for offset in 0..4 {
            o.delivered(3, offset);
        }
        o.delivered(4, 9);
        o.acked(3, 0).unwrap();
        o.acked(3, 2).unwrap();
        assert_eq!(o.revoke(&[3, 4]), [(3, 1)], "partition 4 has nothing acked");
        assert_eq!(o.uncommitted(), []);
        assert_eq!(o.acked(3, 1), Err(Stale::Partition));
        assert_eq!(o.pending(), 0);
    }
}
