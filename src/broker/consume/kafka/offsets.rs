//! Commit positions of one Kafka partition when requests finish out of
//! order. Kafka stores one committed offset per partition and group: the
//! offset of the next record to read. So the consumer may commit offset
//! `n` only once every record it received below `n` is finished.

use std::collections::BTreeMap;

/// Received offsets of one partition and the position they allow to
/// commit.
#[derive(Debug, Default)]
pub(super) struct PartitionOffsets {
    /// Received offsets at or above the commit position, with whether each
    /// is finished. Kafka offsets may have gaps (compaction, transaction
    /// markers), so only received offsets count.
    pending: BTreeMap<i64, bool>,
    /// Offset after the last one of the finished run from the start: the
    /// position to commit.
    committable: Option<i64>,
    /// Position last handed to the client for commit.
    committed: Option<i64>,
}

impl PartitionOffsets {
    /// Records that the record at `offset` was handed to the caller.
    pub(super) fn receive(&mut self, offset: i64) {
        self.pending.insert(offset, false);
    }

    /// Marks `offset` finished and moves the commit position past every
    /// finished offset that no unfinished one precedes. Returns false when
    /// `offset` was never received.
    pub(super) fn finish(&mut self, offset: i64) -> bool {
        let Some(finished) = self.pending.get_mut(&offset) else {
            return false;
        };
        *finished = true;

        while let Some(entry) = self.pending.first_entry()
            && *entry.get()
        {
            let next = entry.key() + 1;
            // A record received again after a seek must not move it back.
            self.committable = Some(self.committable.map_or(next, |c| c.max(next)));
            entry.remove();
        }
        true
    }

    /// Counts the received offsets that are not finished.
    pub(super) fn unfinished(&self) -> usize {
        self.pending.values().filter(|finished| !**finished).count()
    }

    /// Returns the position to commit, which counts every finished offset,
    /// when it is ahead of the last one committed.
    pub(super) fn uncommitted(&self) -> Option<i64> {
        let committable = self.committable?;
        match self.committed {
            Some(committed) if committed >= committable => None,
            _ => Some(committable),
        }
    }

    /// Returns the position to commit, whether or not it was committed
    /// before, for the final commit at revocation.
    pub(super) fn committable(&self) -> Option<i64> {
        self.committable
    }

    /// Records that `position` was handed to the client for commit.
    pub(super) fn mark_committed(&mut self, position: i64) {
        self.committed = Some(self.committed.map_or(position, |c| c.max(position)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(offsets: &[i64]) -> PartitionOffsets {
        let mut partition = PartitionOffsets::default();
        for &offset in offsets {
            partition.receive(offset);
        }
        partition
    }

    #[test]
    fn in_order_finish_commits_each_next_offset() {
        let mut partition = received(&[0, 1, 2]);

        assert_eq!(partition.uncommitted(), None);
        assert!(partition.finish(0));
        assert_eq!(partition.uncommitted(), Some(1));
        assert!(partition.finish(1));
        assert!(partition.finish(2));
        assert_eq!(partition.uncommitted(), Some(3));
    }

    #[test]
    fn unfinished_offset_holds_the_position() {
        let mut partition = received(&[10, 11, 12, 13]);

        partition.finish(10);
        partition.finish(12);
        partition.finish(13);

        assert_eq!(partition.uncommitted(), Some(11));
        assert_eq!(partition.unfinished(), 1);
        partition.finish(11);
        assert_eq!(partition.uncommitted(), Some(14));
        assert_eq!(partition.unfinished(), 0);
    }

    #[test]
    fn nothing_to_commit_until_the_first_finishes() {
        let mut partition = received(&[5, 6]);

        partition.finish(6);

        assert_eq!(partition.uncommitted(), None);
        assert_eq!(partition.committable(), None);
    }

    #[test]
    fn gaps_between_offsets_do_not_block() {
        let mut partition = received(&[3, 7, 20]);

        partition.finish(20);
        partition.finish(3);
        partition.finish(7);

        assert_eq!(partition.uncommitted(), Some(21));
    }

    #[test]
    fn committed_position_is_not_offered_again() {
        let mut partition = received(&[0, 1]);
        partition.finish(0);

        partition.mark_committed(1);

        assert_eq!(partition.uncommitted(), None);
        assert_eq!(partition.committable(), Some(1));
        partition.finish(1);
        assert_eq!(partition.uncommitted(), Some(2));
    }

    #[test]
    fn unknown_offset_is_not_finished() {
        let mut partition = received(&[0]);

        assert!(!partition.finish(1));
        assert_eq!(partition.uncommitted(), None);
    }

    #[test]
    fn repeated_record_keeps_position() {
        let mut partition = received(&[0, 1, 2]);
        partition.finish(0);
        partition.finish(1);
        partition.finish(2);

        partition.receive(1);
        partition.finish(1);

        assert_eq!(partition.committable(), Some(3));
    }
}
