//! Per-conversation cursors: which messages a device has already delivered, so that it delivers
//! each message once, in order, and notices gaps. Pure: no I/O, no clock.
//!
//! **Invariant**: a cursor only moves forward, and only over a message that was delivered (or, for
//! a baseline, deliberately skipped). So "seq ≤ cursor" means "already handled", and a live
//! message with seq > cursor + 1 means the device missed something and must `Sync` before
//! delivering more of that conversation.

use std::collections::HashMap;

use piazza_protocol::limits::SYNC_CURSORS_MAX;
use piazza_protocol::{ConversationId, Message, Seq, SyncBatch, SyncCursor};

/// The highest contiguous seq handled per conversation. Conversations never seen are at
/// [`Seq::ZERO`], which is also where the node starts a conversation a `Sync` does not name.
///
/// Holds one entry per conversation the device has seen a message of; that is the bound.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursors {
    seqs: HashMap<ConversationId, Seq>,
}

/// What a message means to the [`Cursors`], as decided by [`Cursors::handle_live`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next message of its conversation: deliver it. The cursor moved onto it.
    New,
    /// Already handled (seq ≤ cursor): drop it.
    Duplicate,
    /// Messages between the cursor and this one are missing: drop it and `Sync`, which returns
    /// the missing ones and this one in order. The cursor did not move.
    Gap {
        /// The first missing seq (cursor + 1).
        missing_from: Seq,
    },
}

impl Cursors {
    /// No conversation seen yet: everything is new.
    pub fn new() -> Cursors {
        Cursors::default()
    }

    /// Cursors resumed from a saved list (see [`Cursors::sync_cursors`]). A conversation named
    /// twice keeps the higher seq.
    pub fn from_sync_cursors(cursors: &[SyncCursor]) -> Cursors {
        let mut out = Cursors::new();
        for cursor in cursors {
            out.advance_to(&cursor.conversation, cursor.seq);
        }
        out
    }

    /// The cursor of one conversation ([`Seq::ZERO`] if never seen).
    pub fn seq(&self, conversation: &ConversationId) -> Seq {
        self.seqs.get(conversation).copied().unwrap_or(Seq::ZERO)
    }

    /// How many conversations have a cursor.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// Whether no conversation has a cursor yet.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Judges a message pushed live on the event stream, and moves the cursor onto it if it is
    /// the next one.
    pub fn handle_live(&mut self, message: &Message) -> Arrival {
        let cursor = self.seq(&message.conversation);
        if message.seq <= cursor {
            return Arrival::Duplicate;
        }
        match cursor.next() {
            Some(next) if next == message.seq => {
                self.seqs.insert(message.conversation.clone(), message.seq);
                Arrival::New
            }
            Some(next) => Arrival::Gap { missing_from: next },
            // Unreachable in practice: the cursor is below `message.seq`, so it is below
            // u64::MAX and has a successor. Treat it as a duplicate rather than panic.
            None => Arrival::Duplicate,
        }
    }

    /// Judges a message returned by `Sync` (or `History`) and moves the cursor onto it if it is
    /// newer. Returns whether it is new, that is, whether to deliver it.
    ///
    /// Unlike [`Cursors::handle_live`] a jump is accepted: the node answers a `Sync` with
    /// everything after the cursor, so a seq it skips does not exist.
    pub fn handle_synced(&mut self, message: &Message) -> bool {
        self.advance_to(&message.conversation, message.seq)
    }

    /// Applies one whole `Sync` answer: keeps the messages that are new (in the order the node
    /// sent them, which is ascending seq per conversation) and says whether to ask again.
    ///
    /// The node sets `more` when it held messages back; the client then asks again from the
    /// advanced cursors. A batch with `more` set that brought nothing new ends the pass instead
    /// (`stalled`): asking again with the same cursors would get the same answer forever, which
    /// happens when the device has more conversations than a `Sync` can name.
    pub fn handle_sync_batch(&mut self, batch: SyncBatch) -> SyncStep {
        let fresh: Vec<Message> = batch
            .messages
            .into_iter()
            .filter(|message| self.handle_synced(message))
            .collect();
        let stalled = batch.more && fresh.is_empty();
        SyncStep {
            more: batch.more && !stalled,
            stalled,
            fresh,
        }
    }

    /// Moves a conversation's cursor forward to `seq` without delivering anything (a baseline, or
    /// messages the caller handled another way). Returns whether it moved.
    pub fn advance_to(&mut self, conversation: &ConversationId, seq: Seq) -> bool {
        if seq <= self.seq(conversation) {
            return false;
        }
        self.seqs.insert(conversation.clone(), seq);
        true
    }

    /// The cursors to put in a `Sync` request, sorted by conversation.
    ///
    /// At most [`SYNC_CURSORS_MAX`] of them, the ones with the highest seqs: a conversation left
    /// out is synced from the beginning by the node (and its old messages then dropped as
    /// duplicates here), so leaving out the shortest histories costs the least. Conversations at
    /// [`Seq::ZERO`] are never listed, since omitting them means the same thing.
    pub fn sync_cursors(&self) -> Vec<SyncCursor> {
        let mut cursors: Vec<SyncCursor> = self
            .seqs
            .iter()
            .filter(|(_, seq)| **seq > Seq::ZERO)
            .map(|(conversation, seq)| SyncCursor {
                conversation: conversation.clone(),
                seq: *seq,
            })
            .collect();
        if cursors.len() > SYNC_CURSORS_MAX {
            cursors.sort_by_key(|c| std::cmp::Reverse(c.seq));
            cursors.truncate(SYNC_CURSORS_MAX);
        }
        cursors.sort_by(|a, b| a.conversation.cmp(&b.conversation));
        cursors
    }
}

/// The outcome of [`Cursors::handle_sync_batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncStep {
    /// The messages not seen before, to deliver in this order.
    pub fresh: Vec<Message>,
    /// Ask again: the node has more and this batch made progress.
    pub more: bool,
    /// The node said it has more, but nothing in the batch was new: stop asking.
    pub stalled: bool,
}

#[cfg(test)]
mod tests;
