//! Correctness bookkeeping for one direction of a conversation (one sender → one receiver).
//!
//! The sender numbers its messages 0, 1, 2, … (the load-test number, carried in the text) and
//! notes, for each acknowledged one, the conversation seq the node gave it. The receiver notes
//! each number it gets with the conversation seq it arrived with. [`reconcile`] compares both:
//!
//! * **lost**: acknowledged (durably stored) but never delivered;
//! * **duplicate**: delivered more than once;
//! * **out of order**: delivered after a message with a higher conversation seq. The order checked
//!   is the node's (conversation seq), not the order the sender started its sends in: in the open
//!   loop several sends of one sender are in flight at once, and the node may store them in any
//!   order, which is correct;
//! * **seq mismatch**: delivered with another conversation seq than the ack named (the message was
//!   stored twice, or the ack lies).

/// What the sender knows: which messages were acknowledged, and with which conversation seq.
#[derive(Clone, Debug, Default)]
pub(crate) struct SendLog {
    /// Conversation seq per load-test number; 0 = not acknowledged (conversation seqs start at 1).
    acks: Vec<u64>,
}

impl SendLog {
    /// An empty log.
    pub(crate) fn new() -> SendLog {
        SendLog::default()
    }

    /// Message `number` was acknowledged as conversation seq `seq`.
    pub(crate) fn record_ack(&mut self, number: u64, seq: u64) {
        let Ok(index) = usize::try_from(number) else {
            return;
        };
        if self.acks.len() <= index {
            self.acks.resize(index + 1, 0);
        }
        self.acks[index] = seq;
    }

    /// How many messages were acknowledged.
    pub(crate) fn acked(&self) -> u64 {
        self.acks.iter().filter(|&&seq| seq != 0).count() as u64
    }
}

/// How one delivery was classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// First delivery of this message, in order.
    New,
    /// First delivery of this message, but after one with a higher conversation seq.
    OutOfOrder,
    /// This message was delivered before.
    Duplicate,
}

/// What the receiver saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct RecvLog {
    /// Conversation seq each load-test number arrived with; 0 = not delivered.
    seen: Vec<u64>,
    /// Highest conversation seq delivered so far.
    highest_seq: u64,
    delivered: u64,
    duplicates: u64,
    out_of_order: u64,
}

impl RecvLog {
    /// An empty log.
    pub(crate) fn new() -> RecvLog {
        RecvLog::default()
    }

    /// Message `number` arrived as conversation seq `seq` (at least 1).
    pub(crate) fn record(&mut self, number: u64, seq: u64) -> Arrival {
        let Ok(index) = usize::try_from(number) else {
            return Arrival::Duplicate;
        };
        if self.seen.len() <= index {
            self.seen.resize(index + 1, 0);
        }
        if self.seen[index] != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.seen[index] = seq.max(1);
        self.delivered += 1;
        if seq < self.highest_seq {
            self.out_of_order += 1;
            Arrival::OutOfOrder
        } else {
            self.highest_seq = seq;
            Arrival::New
        }
    }
}

/// Order across all senders of one conversation, at one receiver: first deliveries must come in
/// conversation seq order whoever sent them. (Per-direction order, in [`RecvLog`], cannot see two
/// senders' messages swapped.)
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ConversationOrder {
    highest_seq: u64,
    out_of_order: u64,
}

impl ConversationOrder {
    /// A first delivery (not a duplicate) arrived with conversation seq `seq`; returns whether it
    /// was in order.
    pub(crate) fn record(&mut self, seq: u64) -> bool {
        if seq < self.highest_seq {
            self.out_of_order += 1;
            false
        } else {
            self.highest_seq = seq;
            true
        }
    }

    /// First deliveries that came after a higher seq of the conversation.
    pub(crate) fn out_of_order(&self) -> u64 {
        self.out_of_order
    }
}

/// The outcome of one direction, or of many added up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Messages acknowledged by the node.
    pub(crate) acked: u64,
    /// Distinct messages delivered.
    pub(crate) delivered: u64,
    /// Acknowledged but not delivered.
    pub(crate) lost: u64,
    /// Deliveries of a message already delivered.
    pub(crate) duplicates: u64,
    /// First deliveries that came after a higher conversation seq.
    pub(crate) out_of_order: u64,
    /// Delivered with another conversation seq than acknowledged.
    pub(crate) seq_mismatch: u64,
    /// Delivered although the send failed (for example timed out after the node had stored it).
    pub(crate) delivered_unacked: u64,
}

impl Tally {
    /// Adds another tally to this one.
    pub(crate) fn add(&mut self, other: &Tally) {
        self.acked += other.acked;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.seq_mismatch += other.seq_mismatch;
        self.delivered_unacked += other.delivered_unacked;
    }
}

/// Compares what one sender had acknowledged with what its receiver got.
pub(crate) fn reconcile(sent: &SendLog, received: &RecvLog) -> Tally {
    let mut tally = Tally {
        acked: sent.acked(),
        delivered: received.delivered,
        duplicates: received.duplicates,
        out_of_order: received.out_of_order,
        ..Tally::default()
    };
    let len = sent.acks.len().max(received.seen.len());
    for index in 0..len {
        let acked = sent.acks.get(index).copied().unwrap_or(0);
        let seen = received.seen.get(index).copied().unwrap_or(0);
        match (acked, seen) {
            (0, 0) => {}
            (_, 0) => tally.lost += 1,
            (0, _) => tally.delivered_unacked += 1,
            (acked, seen) if acked != seen => tally.seq_mismatch += 1,
            _ => {}
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_delivered_in_order() {
        let mut sent = SendLog::new();
        let mut received = RecvLog::new();
        // The conversation interleaves the other direction: this one gets seqs 1, 3, 5, …
        for n in 0..100 {
            sent.record_ack(n, 2 * n + 1);
            assert_eq!(received.record(n, 2 * n + 1), Arrival::New);
        }
        let tally = reconcile(&sent, &received);
        assert_eq!(
            tally,
            Tally {
                acked: 100,
                delivered: 100,
                ..Tally::default()
            }
        );
    }

    #[test]
    fn missing_deliveries_are_lost_and_unacked_gaps_are_not() {
        let mut sent = SendLog::new();
        let mut received = RecvLog::new();
        for n in 0..10 {
            if n != 4 {
                // Message 4 failed to send: never acked, so never expected.
                sent.record_ack(n, n + 1);
            }
        }
        for n in [0, 1, 2, 3, 5, 6, 8] {
            received.record(n, n + 1);
        }
        let tally = reconcile(&sent, &received);
        assert_eq!(tally.acked, 9);
        assert_eq!(tally.delivered, 7);
        assert_eq!(tally.lost, 2, "7 and 9 were acked and never arrived");
        assert_eq!(tally.delivered_unacked, 0);
    }

    #[test]
    fn duplicates_count_once_as_delivered() {
        let mut sent = SendLog::new();
        let mut received = RecvLog::new();
        sent.record_ack(0, 1);
        sent.record_ack(1, 2);
        assert_eq!(received.record(0, 1), Arrival::New);
        assert_eq!(received.record(1, 2), Arrival::New);
        assert_eq!(received.record(1, 2), Arrival::Duplicate);
        assert_eq!(received.record(0, 1), Arrival::Duplicate);
        let tally = reconcile(&sent, &received);
        assert_eq!(tally.delivered, 2);
        assert_eq!(tally.duplicates, 2);
        assert_eq!(tally.lost, 0);
        assert_eq!(tally.out_of_order, 0);
    }

    #[test]
    fn order_is_judged_by_conversation_seq_not_by_send_number() {
        let mut received = RecvLog::new();
        // Sends 0 and 1 were in flight together and the node stored 1 first: that is in order.
        assert_eq!(received.record(1, 1), Arrival::New);
        assert_eq!(received.record(0, 2), Arrival::New);
        // A delivery going back in the conversation is out of order.
        assert_eq!(received.record(3, 5), Arrival::New);
        assert_eq!(received.record(2, 4), Arrival::OutOfOrder);
        assert_eq!(received.record(4, 6), Arrival::New);
        let mut sent = SendLog::new();
        for (n, seq) in [(0, 2), (1, 1), (2, 4), (3, 5), (4, 6)] {
            sent.record_ack(n, seq);
        }
        let tally = reconcile(&sent, &received);
        assert_eq!(tally.out_of_order, 1);
        assert_eq!(tally.delivered, 5);
        assert_eq!(tally.lost, 0);
        assert_eq!(tally.seq_mismatch, 0);
    }

    #[test]
    fn order_across_senders_is_checked_per_conversation() {
        // Two senders A and B in one group; the receiver gets A's seq 3, then B's seq 2: each
        // sender's own messages are in order, the conversation's are not.
        let mut logs = [RecvLog::new(), RecvLog::new()];
        let mut order = ConversationOrder::default();
        for (sender, number, seq) in [(0, 0, 1), (0, 1, 3), (1, 0, 2)] {
            assert_ne!(logs[sender].record(number, seq), Arrival::OutOfOrder);
            order.record(seq);
        }
        assert_eq!(logs[0].out_of_order + logs[1].out_of_order, 0);
        assert_eq!(order.out_of_order(), 1);
        assert!(order.record(4));
        assert!(!order.record(3));
        assert_eq!(order.out_of_order(), 2);
    }

    #[test]
    fn a_delivery_under_another_seq_than_acked_is_a_mismatch() {
        let mut sent = SendLog::new();
        let mut received = RecvLog::new();
        sent.record_ack(0, 1);
        received.record(0, 7);
        received.record(1, 8); // never acked (the send timed out) but stored
        let tally = reconcile(&sent, &received);
        assert_eq!(tally.seq_mismatch, 1);
        assert_eq!(tally.delivered_unacked, 1);
        assert_eq!(tally.lost, 0);
    }

    #[test]
    fn tallies_add_up() {
        let mut total = Tally::default();
        let one = Tally {
            acked: 3,
            delivered: 2,
            lost: 1,
            duplicates: 4,
            out_of_order: 5,
            seq_mismatch: 6,
            delivered_unacked: 7,
        };
        total.add(&one);
        total.add(&one);
        assert_eq!(total.acked, 6);
        assert_eq!(total.lost, 2);
        assert_eq!(total.delivered_unacked, 14);
    }
}
