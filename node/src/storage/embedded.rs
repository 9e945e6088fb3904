//! The embedded adapter: redb (one file, copy-on-write B-trees, ACID commits with one fsync),
//! chosen over fjall by the group-commit benchmark in `benches/README.md`.
//!
//! One writer thread owns all write transactions. It blocks on the bounded queue, then drains up to
//! `commit_batch_records_max` records that are already waiting, commits them in one transaction
//! with `Durability::Immediate` (one fsync), and calls every batch's callback. Batching is natural:
//! whatever arrived while the previous commit was syncing goes into the next one, so there is no
//! timer and no added latency when the node is quiet.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use piazza_protocol::{ConversationId, GroupId, Message, ReceiptState, Seq, UserId};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use tokio::sync::mpsc;

use super::{
    CommitCallback, GroupRecord, Role, Storage, StorageError, Write, decode_group_row,
    decode_message_row, encode_group_row, encode_message_row,
};

/// (conversation, seq) → message row.
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// group id → group row.
const GROUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("groups");
/// (conversation, user) → role byte.
const MEMBERS: TableDefinition<(&str, &str), u8> = TableDefinition::new("members");
/// (user, conversation) → 0: the conversations a user takes part in.
const USER_CONVERSATIONS: TableDefinition<(&str, &str), u8> =
    TableDefinition::new("user_conversations");
/// (conversation, user) → (delivered, read).
const RECEIPTS: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("receipts");

/// (conversation, seq, emoji, user) → 0: who reacted how.
const REACTIONS: TableDefinition<(&str, u64, &str, &str), u8> = TableDefinition::new("reactions");
/// (conversation, seq) → pin time (ms): pinned messages, ordered by pin time when read.
const PINS: TableDefinition<(&str, u64), u64> = TableDefinition::new("pins");

/// Name of the database file inside the data directory.
pub(crate) const DB_FILE_NAME: &str = "piazza.redb";

enum Item {
    Batch {
        writes: Vec<Write>,
        done: CommitCallback,
    },
    Close,
}

/// The redb-backed [`Storage`].
pub struct EmbeddedStorage {
    /// `None` once closed, so the file lock is released even while actors still hold the store.
    db: RwLock<Option<Arc<Database>>>,
    tx: mpsc::Sender<Item>,
    healthy: Arc<AtomicBool>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EmbeddedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStorage")
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

fn engine(e: impl std::fmt::Display) -> StorageError {
    StorageError::Engine(e.to_string())
}

impl EmbeddedStorage {
    /// Opens (or creates) the store in `data_dir` and starts its writer thread.
    pub fn open(
        data_dir: &Path,
        queue_max: usize,
        batch_records_max: usize,
    ) -> Result<EmbeddedStorage, StorageError> {
        std::fs::create_dir_all(data_dir).map_err(engine)?;
        let db = Database::create(data_dir.join(DB_FILE_NAME)).map_err(engine)?;
        // Create every table up front so readers never meet a missing table.
        let txn = db.begin_write().map_err(engine)?;
        txn.open_table(MESSAGES).map_err(engine)?;
        txn.open_table(GROUPS).map_err(engine)?;
        txn.open_table(MEMBERS).map_err(engine)?;
        txn.open_table(USER_CONVERSATIONS).map_err(engine)?;
        txn.open_table(RECEIPTS).map_err(engine)?;
        txn.open_table(REACTIONS).map_err(engine)?;
        txn.open_table(PINS).map_err(engine)?;
        txn.commit().map_err(engine)?;

        let db = Arc::new(db);
        let healthy = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel(queue_max);
        let writer = Writer {
            db: db.clone(),
            rx,
            healthy: healthy.clone(),
            batch_records_max,
        };
        let handle = std::thread::Builder::new()
            .name("piazza-storage-writer".into())
            .spawn(move || writer.run())
            .map_err(engine)?;
        Ok(EmbeddedStorage {
            db: RwLock::new(Some(db)),
            tx,
            healthy,
            writer: Mutex::new(Some(handle)),
        })
    }
}

impl EmbeddedStorage {
    fn db(&self) -> Result<Arc<Database>, StorageError> {
        let guard = self
            .db
            .read()
            .map_err(|_| StorageError::Engine("lock poisoned".into()))?;
        guard.clone().ok_or(StorageError::Closed)
    }
}

impl Storage for EmbeddedStorage {
    fn submit(&self, writes: Vec<Write>, done: CommitCallback) -> Result<(), StorageError> {
        if !self.is_healthy() {
            let error = StorageError::Engine("an earlier commit failed".into());
            done(Err(error.clone()));
            return Err(error);
        }
        let (error, item) = match self.tx.try_send(Item::Batch { writes, done }) {
            Ok(()) => {
                metrics::counter!("piazza_storage_queue_pushed_total").increment(1);
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Full(item)) => {
                metrics::counter!("piazza_storage_queue_full_total").increment(1);
                (StorageError::Overloaded, item)
            }
            Err(mpsc::error::TrySendError::Closed(item)) => (StorageError::Closed, item),
        };
        if let Item::Batch { done, .. } = item {
            done(Err(error.clone()));
        }
        Err(error)
    }

    fn group(&self, id: GroupId) -> Result<Option<GroupRecord>, StorageError> {
        let txn = self.db()?.begin_read().map_err(engine)?;
        let table = txn.open_table(GROUPS).map_err(engine)?;
        match table.get(id.get()).map_err(engine)? {
            Some(row) => Ok(Some(decode_group_row(row.value())?)),
            None => Ok(None),
        }
    }

    fn members(
        &self,
        conversation: &ConversationId,
        max: usize,
    ) -> Result<Vec<(UserId, Role)>, StorageError> {
        let key = conversation.to_string();
        let txn = self.db()?.begin_read().map_err(engine)?;
        let table = txn.open_table(MEMBERS).map_err(engine)?;
        let mut members = Vec::new();
        for item in table.range((key.as_str(), "")..).map_err(engine)?.take(max) {
            let (k, v) = item.map_err(engine)?;
            let (conv, user) = k.value();
            if conv != key {
                break;
            }
            let user = user.parse::<UserId>().map_err(|e| StorageError::Corrupt {
                table: "members",
                reason: e.to_string(),
            })?;
            members.push((user, Role::from_byte(v.value())?));
        }
        Ok(members)
    }

    fn message(
        &self,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Option<Message>, StorageError> {
        let key = conversation.to_string();
        let txn = self.db()?.begin_read().map_err(engine)?;
        let table = txn.open_table(MESSAGES).map_err(engine)?;
        match table.get((key.as_str(), seq.get())).map_err(engine)? {
            Some(row) => Ok(Some(decode_message_row(row.value())?)),
            None => Ok(None),
        }
    }

    fn has_reacted(
        &self,
        conversation: &ConversationId,
        target: Seq,
        emoji: &str,
        user: &UserId,
    ) -> Result<bool, StorageError> {
        let key = conversation.to_string();
        let txn = self.db()?.begin_read().map_err(engine)?;
        let table = txn.open_table(REACTIONS).map_err(engine)?;
        Ok(table
            .get((key.as_str(), target.get(), emoji, user.as_str()))
            .map_err(engine)?
            .is_some())
    }

    fn pinned(&self, conversation: &ConversationId, max: usize) -> Result<Vec<Seq>, StorageError> {
        let key = conversation.to_string();
        let txn = self.db()?.begin_read().map_err(engine)?;
        let table = txn.open_table(PINS).map_err(engine)?;
        let mut pins = Vec::new();
        for item in table
            .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
            .map_err(engine)?
            .take(max)
        {
            let (k, v) = item.map_err(engine)?;
            pins.push((v.value(), Seq::new(k.value().1)));
        }
        pins.sort();
        Ok(pins.into_iter().map(|(_, seq)| seq).collect())
    }

    fn last_seq(&self, conversation: &ConversationId) -> Result<Seq, StorageError> {
        let key = conversation.to_string();
        let txn = self.db()?.begin_read().map_err(engine)?;
        let table = txn.open_table(MESSAGES).map_err(engine)?;
        let last = table
            .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
            .map_err(engine)?
            .next_back();
        match last {
            Some(item) => Ok(Seq::new(item.map_err(engine)?.0.value().1)),
            None => Ok(Seq::ZERO),
        }
    }

    fn messages_before(
        &self,
        conversation: &ConversationId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StorageError> {
        let key = conversation.to_string();
        let before = before.map_or(u64::MAX, Seq::get);
        let txn = self.db()?.begin_read().map_err(engine)?;
        let table = txn.open_table(MESSAGES).map_err(engine)?;
        let mut messages = Vec::with_capacity(limit.min(256));
        let mut more = false;
        for item in table
            .range((key.as_str(), 0)..(key.as_str(), before))
            .map_err(engine)?
            .rev()
        {
            if messages.len() == limit {
                more = true;
                break;
            }
            let (_, row) = item.map_err(engine)?;
            messages.push(decode_message_row(row.value())?);
        }
        messages.reverse();
        Ok((messages, more))
    }

    fn messages_after(
        &self,
        conversation: &ConversationId,
        after: Seq,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StorageError> {
        let key = conversation.to_string();
        let Some(first) = after.next() else {
            return Ok((Vec::new(), false));
        };
        let txn = self.db()?.begin_read().map_err(engine)?;
        let table = txn.open_table(MESSAGES).map_err(engine)?;
        let mut messages = Vec::with_capacity(limit.min(256));
        let mut more = false;
        for item in table
            .range((key.as_str(), first.get())..=(key.as_str(), u64::MAX))
            .map_err(engine)?
        {
            if messages.len() == limit {
                more = true;
                break;
            }
            let (_, row) = item.map_err(engine)?;
            messages.push(decode_message_row(row.value())?);
        }
        Ok((messages, more))
    }

    fn user_conversations(
        &self,
        user: &UserId,
        after: Option<&ConversationId>,
        max: usize,
    ) -> Result<Vec<ConversationId>, StorageError> {
        let txn = self.db()?.begin_read().map_err(engine)?;
        let table = txn.open_table(USER_CONVERSATIONS).map_err(engine)?;
        let after_key = after.map(ConversationId::to_string);
        let start = after_key.as_deref().unwrap_or("");
        let mut conversations = Vec::new();
        for item in table.range((user.as_str(), start)..).map_err(engine)? {
            if conversations.len() == max {
                break;
            }
            let (k, _) = item.map_err(engine)?;
            let (owner, conv) = k.value();
            if owner != user.as_str() {
                break;
            }
            if after_key.as_deref() == Some(conv) {
                continue;
            }
            conversations.push(conv.parse::<ConversationId>().map_err(|e| {
                StorageError::Corrupt {
                    table: "user_conversations",
                    reason: e.to_string(),
                }
            })?);
        }
        Ok(conversations)
    }

    fn receipts(&self, conversation: &ConversationId) -> Result<Vec<ReceiptState>, StorageError> {
        let key = conversation.to_string();
        let txn = self.db()?.begin_read().map_err(engine)?;
        let table = txn.open_table(RECEIPTS).map_err(engine)?;
        let mut receipts = Vec::new();
        for item in table.range((key.as_str(), "")..).map_err(engine)? {
            let (k, v) = item.map_err(engine)?;
            let (conv, user) = k.value();
            if conv != key {
                break;
            }
            let user = user.parse::<UserId>().map_err(|e| StorageError::Corrupt {
                table: "receipts",
                reason: e.to_string(),
            })?;
            let (delivered, read) = v.value();
            receipts.push(ReceiptState {
                user,
                delivered: Seq::new(delivered),
                read: Seq::new(read),
            });
        }
        Ok(receipts)
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn close(&self) -> Result<(), StorageError> {
        let handle = match self.writer.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(handle) = handle else { return Ok(()) };
        // Blocks while the queue is full; the writer keeps draining it, so this terminates.
        if self.tx.blocking_send(Item::Close).is_err() {
            return Err(StorageError::Closed);
        }
        handle
            .join()
            .map_err(|_| StorageError::Engine("writer thread panicked".into()))
    }
}

struct Writer {
    db: Arc<Database>,
    rx: mpsc::Receiver<Item>,
    healthy: Arc<AtomicBool>,
    batch_records_max: usize,
}

impl Writer {
    fn run(mut self) {
        let mut closing = false;
        while !closing {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let mut batches = Vec::new();
            let mut records = 0usize;
            let mut next = Some(first);
            // Drain what is already queued, bounded by the batch size.
            while let Some(item) = next.take() {
                match item {
                    Item::Close => closing = true,
                    Item::Batch { writes, done } => {
                        records += writes.len();
                        batches.push((writes, done));
                    }
                }
                if closing || records >= self.batch_records_max {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            metrics::counter!("piazza_storage_queue_popped_total").increment(batches.len() as u64);
            self.commit(batches, records);
        }
        // Anything still queued after Close was submitted after shutdown began: refuse it.
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            if let Item::Batch { done, .. } = item {
                done(Err(StorageError::Closed));
            }
        }
    }

    fn commit(&self, batches: Vec<(Vec<Write>, CommitCallback)>, records: usize) {
        if batches.is_empty() {
            return;
        }
        let result = if !self.healthy.load(Ordering::Relaxed) {
            Err(StorageError::Engine("an earlier commit failed".into()))
        } else if records == 0 {
            // Only barriers: everything before them is already durable.
            Ok(())
        } else {
            let started = Instant::now();
            let result = self.write(&batches);
            metrics::histogram!("piazza_storage_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("piazza_storage_commit_records").record(records as f64);
            metrics::counter!("piazza_storage_commits_total").increment(1);
            metrics::counter!("piazza_storage_records_total").increment(records as u64);
            if let Err(e) = &result {
                // Durability is unknown after a failed commit (fsync errors are not retryable), so the
                // store stops accepting writes and readiness fails: an operator must intervene.
                tracing::error!(error = %e, "storage commit failed; refusing further writes");
                self.healthy.store(false, Ordering::Relaxed);
            }
            result
        };
        for (_, done) in batches {
            done(result.clone());
        }
    }

    fn write(&self, batches: &[(Vec<Write>, CommitCallback)]) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(engine)?;
        txn.set_durability(Durability::Immediate).map_err(engine)?;
        {
            let mut messages = txn.open_table(MESSAGES).map_err(engine)?;
            let mut groups = txn.open_table(GROUPS).map_err(engine)?;
            let mut members = txn.open_table(MEMBERS).map_err(engine)?;
            let mut index = txn.open_table(USER_CONVERSATIONS).map_err(engine)?;
            let mut receipts = txn.open_table(RECEIPTS).map_err(engine)?;
            let mut reactions = txn.open_table(REACTIONS).map_err(engine)?;
            let mut pins = txn.open_table(PINS).map_err(engine)?;
            let mut pin_clock = crate::node::now_ms();
            for write in batches.iter().flat_map(|(writes, _)| writes) {
                match write {
                    Write::Message(message) => {
                        let key = message.conversation.to_string();
                        let row = encode_message_row(message)?;
                        messages
                            .insert((key.as_str(), message.seq.get()), row.as_slice())
                            .map_err(engine)?;
                    }
                    Write::Group { id, record } => {
                        groups
                            .insert(id.get(), encode_group_row(record).as_slice())
                            .map_err(engine)?;
                    }
                    Write::AddMember {
                        conversation,
                        user,
                        role,
                    } => {
                        let conv = conversation.to_string();
                        if matches!(conversation, ConversationId::Group(_)) {
                            members
                                .insert((conv.as_str(), user.as_str()), role.to_byte())
                                .map_err(engine)?;
                        }
                        index
                            .insert((user.as_str(), conv.as_str()), 0)
                            .map_err(engine)?;
                    }
                    Write::RemoveMember { conversation, user } => {
                        let conv = conversation.to_string();
                        members
                            .remove((conv.as_str(), user.as_str()))
                            .map_err(engine)?;
                        index
                            .remove((user.as_str(), conv.as_str()))
                            .map_err(engine)?;
                    }
                    Write::IndexConversation { user, conversation } => {
                        let conv = conversation.to_string();
                        index
                            .insert((user.as_str(), conv.as_str()), 0)
                            .map_err(engine)?;
                    }
                    Write::Reaction {
                        conversation,
                        target,
                        emoji,
                        user,
                        added,
                    } => {
                        let conv = conversation.to_string();
                        let key = (conv.as_str(), target.get(), emoji.as_str(), user.as_str());
                        if *added {
                            reactions.insert(key, 0).map_err(engine)?;
                        } else {
                            reactions.remove(key).map_err(engine)?;
                        }
                    }
                    Write::Pin {
                        conversation,
                        target,
                        pinned,
                    } => {
                        let conv = conversation.to_string();
                        if *pinned {
                            // Strictly increasing within a commit so pin order is kept.
                            pin_clock += 1;
                            pins.insert((conv.as_str(), target.get()), pin_clock)
                                .map_err(engine)?;
                        } else {
                            pins.remove((conv.as_str(), target.get())).map_err(engine)?;
                        }
                    }
                    Write::Receipt {
                        conversation,
                        user,
                        delivered,
                        read,
                    } => {
                        let conv = conversation.to_string();
                        receipts
                            .insert(
                                (conv.as_str(), user.as_str()),
                                (delivered.get(), read.get()),
                            )
                            .map_err(engine)?;
                    }
                }
            }
        }
        txn.commit().map_err(engine)
    }
}
