//! The embedded adapter: fjall (an LSM tree with a write-ahead journal), in `<data_dir>/store/`.
//!
//! # Why fjall
//!
//! The group-commit benchmark (`benches/README.md`) measured durable appends/s, one fsync per
//! commit, on a quiet 2-core machine: at the batch sizes this writer really runs at, fjall commits
//! 2.8–4.5× more than redb (40k vs 14k at 16 records per commit, 103k vs 23k at 64, 205k vs 71k at
//! 256), and it was never slower at 16 or more records in any run, quiet or contended. The reason is
//! structural: a fjall commit is one sequential journal append plus one fsync, so its cost follows
//! the bytes written, while a copy-on-write B-tree rewrites every leaf a batch touches, so its cost
//! follows the number of active conversations. Reads (~18 µs for a page of 50 messages) are noise
//! next to a commit.
//!
//! # Durability
//!
//! One writer thread owns all writes. It blocks on the bounded queue, then drains up to
//! `commit_batch_records_max` records that are already waiting, and commits them as **one**
//! `WriteBatch` with `durability(Some(PersistMode::SyncAll))`: fjall appends the batch to its
//! journal and `fsync`s the journal file before `commit()` returns. Only then are the batches'
//! callbacks called, in submission order. Batching is natural: whatever arrived while the previous
//! commit was syncing goes into the next one, so there is no timer and no added latency when the
//! node is quiet. A fjall batch *without* a durability mode stays in the journal's user-space buffer
//! and is lost even on a process crash, so `Writer::write` is the only place that commits, and it
//! always asks for `SyncAll`. A batch is atomic across keyspaces (one journal entry, one sequence
//! number); within a commit the last write to a key wins, as if the writes ran one by one.
//!
//! After a crash (or any restart) fjall replays the journal that has not been flushed to on-disk
//! tables into the memtables, so opening takes time proportional to the unflushed journal (0.8–1.6 s
//! for 58 MB in the benchmark; fjall keeps up to 512 MiB of journal by default), not to the size of
//! the store. fjall runs background flush and compaction threads (`fjall:worker`, min(cores, 4) of
//! them); dropping the database stops and joins them.
//!
//! Reads are point and range reads on a snapshot of committed batches, so a reader never sees half
//! of a commit.
//!
//! # Keys
//!
//! fjall keys are bytes ordered lexicographically. One keyspace per table; ids (user and
//! conversation ids, which cannot contain NUL) are stored as their bytes plus a `0x00` terminator,
//! integers as big-endian `u64`, the reaction emoji (free text) as a big-endian `u16` length plus its
//! bytes. The terminator keeps the order of the ids' strings and makes prefix scans exact: the
//! messages of `dm:alice:bob` (`dm:alice:bob\0…`) never meet those of `dm:alice:bobby`.
//!
//! # Closing
//!
//! [`Storage::close`] commits everything queued and stops the writer; committed data stays readable
//! through the closed store. The database (and fjall's lock on the directory) is released when the
//! store is dropped, or at the latest when the same directory is opened again in this process: a
//! closed store's database is then taken away from it (after in-flight reads finish) and dropped
//! before the new one opens, so a node can restart in-process even while old tasks still hold the
//! closed store. Reads on a store whose database was taken return [`StorageError::Closed`].

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Snapshot};
use piazza_protocol::{
    ChannelId, ClientMsgId, ConversationId, GroupId, MediaId, Message, ReceiptState, ScheduledPost,
    Seq, UserId,
};
use tokio::sync::mpsc;

use super::{
    ChannelRecord, CommitCallback, CounterKind, DuePost, GroupRecord, KV_SCAN_MAX, KvRow, KvTable,
    Role, Storage, StorageError, Write, decode_channel_row, decode_group_row, decode_message_row,
    decode_scheduled_row, encode_channel_row, encode_group_row, encode_message_row,
    encode_scheduled_row,
};

/// Directory of the fjall database inside the data directory.
pub(crate) const STORE_DIR_NAME: &str = "store";

/// The file of the earlier redb adapter. A data directory holding one has history this adapter
/// cannot read: opening refuses rather than start with an empty store.
const LEGACY_FILE_NAME: &str = "piazza.redb";

/// The tables, one fjall keyspace each. Values as written by [`Writer::write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Table {
    /// conversation, seq → message row.
    Messages,
    /// group id → group row.
    Groups,
    /// conversation, user → role byte.
    Members,
    /// user, conversation → empty: the conversations a user takes part in.
    UserConversations,
    /// conversation, user → delivered (8 bytes) ++ read (8 bytes).
    Receipts,
    /// conversation, seq, emoji, user → empty: who reacted how.
    Reactions,
    /// conversation, seq → pin time in ms (8 bytes); ordered by pin time when read.
    Pins,
    /// media, conversation → empty: blobs referenced by a message of a conversation.
    MediaRefs,
    /// channel id → channel row.
    Channels,
    /// channel conversation, client msg id → scheduled-post row.
    Scheduled,
    /// due time (8 bytes), channel id (8 bytes), client msg id → empty: the scheduler's index.
    Due,
    /// conversation, post seq, user → empty: who viewed a channel post.
    Viewers,
    /// conversation, post seq, counter kind byte → u64.
    Counters,
    /// Keyed rows of [`KvTable`]s, one keyspace each.
    Kv(KvTable),
}

impl Table {
    const ALL: [Table; 18] = [
        Table::Messages,
        Table::Groups,
        Table::Members,
        Table::UserConversations,
        Table::Receipts,
        Table::Reactions,
        Table::Pins,
        Table::MediaRefs,
        Table::Channels,
        Table::Scheduled,
        Table::Due,
        Table::Viewers,
        Table::Counters,
        Table::Kv(KvTable::ShopLog),
        Table::Kv(KvTable::ShopStaff),
        Table::Kv(KvTable::Outbox),
        Table::Kv(KvTable::Sinks),
        Table::Kv(KvTable::ShopWake),
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Messages => "messages",
            Table::Groups => "groups",
            Table::Members => "members",
            Table::UserConversations => "user_conversations",
            Table::Receipts => "receipts",
            Table::Reactions => "reactions",
            Table::Pins => "pins",
            Table::MediaRefs => "media_refs",
            Table::Channels => "channels",
            Table::Scheduled => "scheduled",
            Table::Due => "due",
            Table::Viewers => "viewers",
            Table::Counters => "counters",
            Table::Kv(table) => table.name(),
        }
    }
}

/// The open database and its keyspaces. Dropping it releases the directory.
struct Engine {
    db: Database,
    /// Indexed by `Table as usize`.
    keyspaces: Vec<Keyspace>,
}

impl Engine {
    fn open(dir: &Path) -> Result<Engine, StorageError> {
        let db = Database::builder(dir).open().map_err(engine_error)?;
        // Create every keyspace up front so readers never meet a missing one.
        let keyspaces = Table::ALL
            .iter()
            .map(|table| {
                db.keyspace(table.name(), KeyspaceCreateOptions::default)
                    .map_err(engine_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Engine { db, keyspaces })
    }

    fn keyspace(&self, table: Table) -> &Keyspace {
        let index = Table::ALL.iter().position(|t| *t == table).unwrap_or(0);
        &self.keyspaces[index]
    }
}

/// Where a store's engine lives: `None` once taken away (see the module docs on closing).
type Slot = RwLock<Option<Arc<Engine>>>;

/// Closed stores of this process whose engine is still open, by store directory.
static CLOSED: Mutex<Vec<(PathBuf, Weak<Slot>)>> = Mutex::new(Vec::new());

/// Takes the engine away from every closed store on `dir` and drops it, so the directory can be
/// opened again.
fn release_closed(dir: &Path) {
    let mut revoked = Vec::new();
    {
        let mut closed = CLOSED.lock().unwrap_or_else(PoisonError::into_inner);
        closed.retain(|(path, slot)| match slot.upgrade() {
            // Dropped: its engine went with it.
            None => false,
            Some(slot) if path == dir => {
                revoked.push(slot);
                false
            }
            Some(_) => true,
        });
    }
    for slot in revoked {
        let taken = slot.write().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(engine) = taken {
            drop_engine(engine);
        }
    }
}

/// Drops `engine` once no read holds it any more (reads hold it for one call), which stops fjall's
/// threads and releases the directory.
fn drop_engine(mut engine: Arc<Engine>) {
    loop {
        match Arc::try_unwrap(engine) {
            Ok(engine) => {
                drop(engine);
                return;
            }
            Err(shared) => {
                engine = shared;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

enum Item {
    Batch {
        writes: Vec<Write>,
        done: CommitCallback,
    },
    Close,
}

/// The fjall-backed [`Storage`].
pub struct EmbeddedStorage {
    engine: Arc<Slot>,
    /// The canonical store directory, the key of [`CLOSED`].
    dir: PathBuf,
    tx: mpsc::Sender<Item>,
    healthy: Arc<AtomicBool>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EmbeddedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStorage")
            .field("dir", &self.dir)
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

fn engine_error(e: impl std::fmt::Display) -> StorageError {
    StorageError::Engine(e.to_string())
}

fn corrupt(table: Table, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        table: table.name(),
        reason: reason.into(),
    }
}

impl EmbeddedStorage {
    /// Opens (or creates) the store in `data_dir` and starts its writer thread.
    pub fn open(
        data_dir: &Path,
        queue_max: usize,
        batch_records_max: usize,
    ) -> Result<EmbeddedStorage, StorageError> {
        if data_dir.join(LEGACY_FILE_NAME).exists() {
            return Err(StorageError::Engine(format!(
                "{} holds {LEGACY_FILE_NAME}, a store of an earlier Piazza version that this one \
                 cannot read; move it away to start with an empty store",
                data_dir.display()
            )));
        }
        let dir = data_dir.join(STORE_DIR_NAME);
        std::fs::create_dir_all(&dir).map_err(engine_error)?;
        let dir = dir.canonicalize().map_err(engine_error)?;
        release_closed(&dir);
        let engine = Arc::new(Engine::open(&dir)?);

        let healthy = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel(queue_max);
        let writer = Writer {
            engine: engine.clone(),
            rx,
            healthy: healthy.clone(),
            batch_records_max,
            last_pin_ms: std::sync::atomic::AtomicU64::new(0),
        };
        let handle = std::thread::Builder::new()
            .name("piazza-storage-writer".into())
            .spawn(move || writer.run())
            .map_err(engine_error)?;
        Ok(EmbeddedStorage {
            engine: Arc::new(RwLock::new(Some(engine))),
            dir,
            tx,
            healthy,
            writer: Mutex::new(Some(handle)),
        })
    }

    fn engine(&self) -> Result<Arc<Engine>, StorageError> {
        let guard = self
            .engine
            .read()
            .map_err(|_| StorageError::Engine("lock poisoned".into()))?;
        guard.clone().ok_or(StorageError::Closed)
    }

    /// The engine and a snapshot of everything committed so far.
    fn read(&self) -> Result<(Arc<Engine>, Snapshot), StorageError> {
        let engine = self.engine()?;
        let snapshot = engine.db.snapshot();
        Ok((engine, snapshot))
    }

    /// One committed row, if present.
    fn get(
        &self,
        table: Table,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<fjall::UserValue>, StorageError> {
        let (engine, snapshot) = self.read()?;
        snapshot
            .get(engine.keyspace(table), key)
            .map_err(engine_error)
    }

    /// Whether a committed row is present.
    fn contains(&self, table: Table, key: impl AsRef<[u8]>) -> Result<bool, StorageError> {
        let (engine, snapshot) = self.read()?;
        snapshot
            .contains_key(engine.keyspace(table), key)
            .map_err(engine_error)
    }
}

// ------------------------------------------------------------------------------------------ keys

/// Appends an id and its `0x00` terminator. Ids never contain NUL (protocol ids are validated
/// visible ASCII), so the terminator ends the id unambiguously and sorts before every id byte.
fn push_id(key: &mut Vec<u8>, id: &str) {
    debug_assert!(!id.as_bytes().contains(&0), "ids cannot contain NUL");
    key.extend_from_slice(id.as_bytes());
    key.push(0);
}

/// The key prefix of everything stored under one id (a conversation or a user).
fn id_prefix(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 1 + 8);
    push_id(&mut key, id);
    key
}

/// `prefix` followed by another id: members, receipts, the user conversation index.
fn id_pair_key(prefix: &[u8], id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + id.len() + 1);
    key.extend_from_slice(prefix);
    push_id(&mut key, id);
    key
}

/// `prefix` followed by a seq: messages and pins.
fn seq_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// A media reference: the blob's id, then the conversation.
fn media_ref_key(media: &MediaId, conversation: &ConversationId) -> Vec<u8> {
    id_pair_key(&id_prefix(media.as_str()), &conversation.to_string())
}

/// The first key after every key that starts with `prefix` (an id prefix ends in `0x00`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The smallest key above every key starting with `prefix` (`None`: no such key, the prefix is
/// empty or all `0xFF`).
fn kv_prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn reaction_key(
    conversation: &str,
    target: u64,
    emoji: &str,
    user: &str,
) -> Result<Vec<u8>, StorageError> {
    let emoji_len = u16::try_from(emoji.len())
        .map_err(|_| corrupt(Table::Reactions, "emoji longer than 65535 bytes"))?;
    let mut key = seq_key(&id_prefix(conversation), target);
    key.extend_from_slice(&emoji_len.to_be_bytes());
    key.extend_from_slice(emoji.as_bytes());
    push_id(&mut key, user);
    Ok(key)
}

/// The scheduler's index key: due time, channel, post id.
fn due_key(at_ms: u64, channel: ChannelId, client_msg_id: &ClientMsgId) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + client_msg_id.as_str().len() + 1);
    key.extend_from_slice(&at_ms.to_be_bytes());
    key.extend_from_slice(&channel.get().to_be_bytes());
    push_id(&mut key, client_msg_id.as_str());
    key
}

fn decode_due_key(key: &[u8]) -> Result<DuePost, StorageError> {
    let bad = || corrupt(Table::Due, "malformed key");
    let (at, rest) = key.split_at_checked(8).ok_or_else(bad)?;
    let (channel, id) = rest.split_at_checked(8).ok_or_else(bad)?;
    let at_ms = u64::from_be_bytes(<[u8; 8]>::try_from(at).map_err(|_| bad())?);
    let channel = u64::from_be_bytes(<[u8; 8]>::try_from(channel).map_err(|_| bad())?);
    let id = key_id(Table::Due, &[], id)?;
    Ok(DuePost {
        at_ms,
        channel: ChannelId::new(channel).map_err(|e| corrupt(Table::Due, e.to_string()))?,
        client_msg_id: id
            .parse()
            .map_err(|e: piazza_protocol::IdError| corrupt(Table::Due, e.to_string()))?,
    })
}

/// A scheduled post's key: the channel's conversation, then the post id.
fn scheduled_prefix(channel: ChannelId) -> Vec<u8> {
    id_prefix(&ConversationId::Channel(channel).to_string())
}

/// A per-post key: conversation, seq, then `tail`.
fn post_key(conversation: &ConversationId, post: Seq) -> Vec<u8> {
    seq_key(&id_prefix(&conversation.to_string()), post.get())
}

/// The seq that ends a key under `prefix`.
fn key_seq(table: Table, prefix: &[u8], key: &[u8]) -> Result<u64, StorageError> {
    key.strip_prefix(prefix)
        .and_then(|rest| <[u8; 8]>::try_from(rest).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt(table, "malformed key"))
}

/// The id that ends a key under `prefix`.
fn key_id<'k>(table: Table, prefix: &[u8], key: &'k [u8]) -> Result<&'k str, StorageError> {
    let id = key
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(&[0]))
        .filter(|id| !id.contains(&0))
        .ok_or_else(|| corrupt(table, "malformed key"))?;
    std::str::from_utf8(id).map_err(|_| corrupt(table, "id is not UTF-8"))
}

fn u64_value(table: Table, value: &[u8]) -> Result<u64, StorageError> {
    <[u8; 8]>::try_from(value)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(table, "malformed value"))
}

fn parse_user(table: Table, id: &str) -> Result<UserId, StorageError> {
    id.parse::<UserId>()
        .map_err(|e| corrupt(table, e.to_string()))
}

fn kv(item: fjall::Guard) -> Result<(fjall::UserKey, fjall::UserValue), StorageError> {
    item.into_inner().map_err(engine_error)
}

// ----------------------------------------------------------------------------------------- reads

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
        let row = self.get(Table::Groups, id.get().to_be_bytes())?;
        row.map(|row| decode_group_row(&row)).transpose()
    }

    fn members(
        &self,
        conversation: &ConversationId,
        max: usize,
    ) -> Result<Vec<(UserId, Role)>, StorageError> {
        let prefix = id_prefix(&conversation.to_string());
        let (engine, snapshot) = self.read()?;
        let mut members = Vec::new();
        for item in snapshot
            .prefix(engine.keyspace(Table::Members), &prefix)
            .take(max)
        {
            let (key, value) = kv(item)?;
            let user = parse_user(Table::Members, key_id(Table::Members, &prefix, &key)?)?;
            let role = match *value {
                [byte] => Role::from_byte(byte)?,
                _ => return Err(corrupt(Table::Members, "malformed role")),
            };
            members.push((user, role));
        }
        Ok(members)
    }

    fn last_seq(&self, conversation: &ConversationId) -> Result<Seq, StorageError> {
        let prefix = id_prefix(&conversation.to_string());
        let (engine, snapshot) = self.read()?;
        let last = snapshot
            .range(
                engine.keyspace(Table::Messages),
                seq_key(&prefix, 0)..=seq_key(&prefix, u64::MAX),
            )
            .next_back();
        match last {
            Some(item) => {
                let (key, _) = kv(item)?;
                Ok(Seq::new(key_seq(Table::Messages, &prefix, &key)?))
            }
            None => Ok(Seq::ZERO),
        }
    }

    fn message(
        &self,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Option<Message>, StorageError> {
        let key = seq_key(&id_prefix(&conversation.to_string()), seq.get());
        let row = self.get(Table::Messages, key)?;
        row.map(|row| decode_message_row(&row)).transpose()
    }

    fn has_reacted(
        &self,
        conversation: &ConversationId,
        target: Seq,
        emoji: &str,
        user: &UserId,
    ) -> Result<bool, StorageError> {
        let key = reaction_key(
            &conversation.to_string(),
            target.get(),
            emoji,
            user.as_str(),
        )?;
        self.contains(Table::Reactions, key)
    }

    fn pinned(&self, conversation: &ConversationId, max: usize) -> Result<Vec<Seq>, StorageError> {
        let prefix = id_prefix(&conversation.to_string());
        let (engine, snapshot) = self.read()?;
        // Rows are keyed by seq but the answer is ordered by pin time, so read past `max` before
        // sorting. The core never keeps more than PINNED_MAX pins, so a scan of four times the
        // asked-for count reads them all; the bound only guards against a corrupt store.
        let mut pins = Vec::new();
        for item in snapshot
            .prefix(engine.keyspace(Table::Pins), &prefix)
            .take(max.saturating_mul(4))
        {
            let (key, value) = kv(item)?;
            let seq = key_seq(Table::Pins, &prefix, &key)?;
            pins.push((u64_value(Table::Pins, &value)?, Seq::new(seq)));
        }
        pins.sort();
        pins.truncate(max);
        Ok(pins.into_iter().map(|(_, seq)| seq).collect())
    }

    fn messages_before(
        &self,
        conversation: &ConversationId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StorageError> {
        let prefix = id_prefix(&conversation.to_string());
        let before = before.map_or(u64::MAX, Seq::get);
        let (engine, snapshot) = self.read()?;
        let mut messages = Vec::with_capacity(limit.min(256));
        let mut more = false;
        for item in snapshot
            .range(
                engine.keyspace(Table::Messages),
                seq_key(&prefix, 0)..seq_key(&prefix, before),
            )
            .rev()
        {
            if messages.len() == limit {
                more = true;
                break;
            }
            let (_, row) = kv(item)?;
            messages.push(decode_message_row(&row)?);
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
        let Some(first) = after.next() else {
            return Ok((Vec::new(), false));
        };
        let prefix = id_prefix(&conversation.to_string());
        let (engine, snapshot) = self.read()?;
        let mut messages = Vec::with_capacity(limit.min(256));
        let mut more = false;
        for item in snapshot.range(
            engine.keyspace(Table::Messages),
            seq_key(&prefix, first.get())..=seq_key(&prefix, u64::MAX),
        ) {
            if messages.len() == limit {
                more = true;
                break;
            }
            let (_, row) = kv(item)?;
            messages.push(decode_message_row(&row)?);
        }
        Ok((messages, more))
    }

    fn user_conversations(
        &self,
        user: &UserId,
        after: Option<&ConversationId>,
        max: usize,
    ) -> Result<Vec<ConversationId>, StorageError> {
        let prefix = id_prefix(user.as_str());
        let start = match after {
            Some(after) => Bound::Excluded(id_pair_key(&prefix, &after.to_string())),
            None => Bound::Included(prefix.clone()),
        };
        let end = Bound::Excluded(prefix_end(&prefix));
        let (engine, snapshot) = self.read()?;
        let mut conversations = Vec::new();
        for item in snapshot
            .range(engine.keyspace(Table::UserConversations), (start, end))
            .take(max)
        {
            let (key, _) = kv(item)?;
            let conversation = key_id(Table::UserConversations, &prefix, &key)?;
            conversations.push(
                conversation
                    .parse::<ConversationId>()
                    .map_err(|e| corrupt(Table::UserConversations, e.to_string()))?,
            );
        }
        Ok(conversations)
    }

    fn receipts(&self, conversation: &ConversationId) -> Result<Vec<ReceiptState>, StorageError> {
        let prefix = id_prefix(&conversation.to_string());
        let (engine, snapshot) = self.read()?;
        let mut receipts = Vec::new();
        for item in snapshot.prefix(engine.keyspace(Table::Receipts), &prefix) {
            let (key, value) = kv(item)?;
            let user = parse_user(Table::Receipts, key_id(Table::Receipts, &prefix, &key)?)?;
            let (delivered, read) = value
                .split_at_checked(8)
                .ok_or_else(|| corrupt(Table::Receipts, "malformed value"))?;
            receipts.push(ReceiptState {
                user,
                delivered: Seq::new(u64_value(Table::Receipts, delivered)?),
                read: Seq::new(u64_value(Table::Receipts, read)?),
            });
        }
        Ok(receipts)
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn media_referenced(
        &self,
        media: &MediaId,
        conversation: &ConversationId,
    ) -> Result<bool, StorageError> {
        let key = media_ref_key(media, conversation);
        self.contains(Table::MediaRefs, key)
    }

    fn channel(&self, id: ChannelId) -> Result<Option<ChannelRecord>, StorageError> {
        let row = self.get(Table::Channels, id.get().to_be_bytes())?;
        row.map(|row| decode_channel_row(&row)).transpose()
    }

    fn member_role(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<Role>, StorageError> {
        let key = id_pair_key(&id_prefix(&conversation.to_string()), user.as_str());
        let row = self.get(Table::Members, key)?;
        match row.as_deref() {
            None => Ok(None),
            Some([byte]) => Role::from_byte(*byte).map(Some),
            Some(_) => Err(corrupt(Table::Members, "malformed role")),
        }
    }

    fn scheduled(
        &self,
        channel: ChannelId,
        max: usize,
    ) -> Result<Vec<ScheduledPost>, StorageError> {
        let prefix = scheduled_prefix(channel);
        let (engine, snapshot) = self.read()?;
        let mut posts = Vec::new();
        for item in snapshot
            .prefix(engine.keyspace(Table::Scheduled), &prefix)
            .take(max)
        {
            let (key, value) = kv(item)?;
            let id = key_id(Table::Scheduled, &prefix, &key)?
                .parse::<ClientMsgId>()
                .map_err(|e| corrupt(Table::Scheduled, e.to_string()))?;
            posts.push(decode_scheduled_row(id, &value)?);
        }
        Ok(posts)
    }

    fn due(&self, until_ms: u64, max: usize) -> Result<(Vec<DuePost>, Option<u64>), StorageError> {
        let (engine, snapshot) = self.read()?;
        let mut due = Vec::new();
        for item in snapshot.iter(engine.keyspace(Table::Due)) {
            let (key, _) = kv(item)?;
            let post = decode_due_key(&key)?;
            if post.at_ms > until_ms || due.len() == max {
                return Ok((due, Some(post.at_ms)));
            }
            due.push(post);
        }
        Ok((due, None))
    }

    fn has_viewed(
        &self,
        conversation: &ConversationId,
        post: Seq,
        user: &UserId,
    ) -> Result<bool, StorageError> {
        let mut key = post_key(conversation, post);
        push_id(&mut key, user.as_str());
        self.contains(Table::Viewers, key)
    }

    fn counter(
        &self,
        conversation: &ConversationId,
        post: Seq,
        kind: CounterKind,
    ) -> Result<u64, StorageError> {
        let mut key = post_key(conversation, post);
        key.push(kind.to_byte());
        let row = self.get(Table::Counters, key)?;
        row.map_or(Ok(0), |value| u64_value(Table::Counters, &value))
    }

    fn kv_get(&self, table: KvTable, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.get(Table::Kv(table), key)?.map(|value| value.to_vec()))
    }

    fn kv_scan(
        &self,
        table: KvTable,
        prefix: &[u8],
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<(Vec<KvRow>, bool), StorageError> {
        let max = max.min(KV_SCAN_MAX);
        let (engine, snapshot) = self.read()?;
        let keyspace = engine.keyspace(Table::Kv(table));
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let end = match kv_prefix_end(prefix) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let mut rows = Vec::new();
        for item in snapshot.range(keyspace, (start, end)) {
            let (key, value) = kv(item)?;
            if rows.len() == max {
                return Ok((rows, true));
            }
            rows.push((key.to_vec(), value.to_vec()));
        }
        Ok((rows, false))
    }

    fn kv_last(&self, table: KvTable, prefix: &[u8]) -> Result<Option<KvRow>, StorageError> {
        let (engine, snapshot) = self.read()?;
        let keyspace = engine.keyspace(Table::Kv(table));
        match snapshot.prefix(keyspace, prefix).next_back() {
            Some(item) => {
                let (key, value) = kv(item)?;
                Ok(Some((key.to_vec(), value.to_vec())))
            }
            None => Ok(None),
        }
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
        let joined = handle
            .join()
            .map_err(|_| StorageError::Engine("writer thread panicked".into()));
        // From now on opening this directory again in this process takes the engine from here.
        CLOSED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((self.dir.clone(), Arc::downgrade(&self.engine)));
        joined
    }
}

// ---------------------------------------------------------------------------------------- writer

struct Writer {
    engine: Arc<Engine>,
    rx: mpsc::Receiver<Item>,
    healthy: Arc<AtomicBool>,
    batch_records_max: usize,
    /// Time stamp (ms) of the newest pin written: pins are ordered by it, so it must increase
    /// strictly across commits, even several in one millisecond.
    last_pin_ms: std::sync::atomic::AtomicU64,
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
                // Durability is unknown after a failed commit (fsync errors are not retryable, and
                // fjall poisons itself), so the store stops accepting writes and readiness fails:
                // an operator must intervene.
                tracing::error!(error = %e, "storage commit failed; refusing further writes");
                self.healthy.store(false, Ordering::Relaxed);
            }
            result
        };
        for (_, done) in batches {
            done(result.clone());
        }
    }

    /// Commits every write of `batches` as one durable fjall batch (journal append + fsync).
    fn write(&self, batches: &[(Vec<Write>, CommitCallback)]) -> Result<(), StorageError> {
        // Last write to a key wins, as if the writes were applied one by one; fjall gives every
        // item of a batch the same sequence number, so it is not left to decide between them.
        let mut rows: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
        let mut pin_clock = crate::node::now_ms().max(self.last_pin_ms.load(Ordering::Relaxed));
        for write in batches.iter().flat_map(|(writes, _)| writes) {
            match write {
                Write::Put { table, key, value } => {
                    rows.insert((Table::Kv(*table), key.clone()), Some(value.clone()));
                }
                Write::Delete { table, key } => {
                    rows.insert((Table::Kv(*table), key.clone()), None);
                }
                Write::Message(message) => {
                    let key = seq_key(
                        &id_prefix(&message.conversation.to_string()),
                        message.seq.get(),
                    );
                    rows.insert((Table::Messages, key), Some(encode_message_row(message)?));
                }
                Write::Group { id, record } => {
                    rows.insert(
                        (Table::Groups, id.get().to_be_bytes().to_vec()),
                        Some(encode_group_row(record)),
                    );
                }
                Write::AddMember {
                    conversation,
                    user,
                    role,
                } => {
                    let conv = conversation.to_string();
                    // Direct conversations have no member rows: their id names both sides.
                    if !matches!(conversation, ConversationId::Direct { .. }) {
                        rows.insert(
                            (
                                Table::Members,
                                id_pair_key(&id_prefix(&conv), user.as_str()),
                            ),
                            Some(vec![role.to_byte()]),
                        );
                    }
                    rows.insert(
                        (
                            Table::UserConversations,
                            id_pair_key(&id_prefix(user.as_str()), &conv),
                        ),
                        Some(Vec::new()),
                    );
                }
                Write::RemoveMember { conversation, user } => {
                    let conv = conversation.to_string();
                    rows.insert(
                        (
                            Table::Members,
                            id_pair_key(&id_prefix(&conv), user.as_str()),
                        ),
                        None,
                    );
                    rows.insert(
                        (
                            Table::UserConversations,
                            id_pair_key(&id_prefix(user.as_str()), &conv),
                        ),
                        None,
                    );
                }
                Write::IndexConversation { user, conversation } => {
                    rows.insert(
                        (
                            Table::UserConversations,
                            id_pair_key(&id_prefix(user.as_str()), &conversation.to_string()),
                        ),
                        Some(Vec::new()),
                    );
                }
                Write::Reaction {
                    conversation,
                    target,
                    emoji,
                    user,
                    added,
                } => {
                    let key = reaction_key(
                        &conversation.to_string(),
                        target.get(),
                        emoji,
                        user.as_str(),
                    )?;
                    rows.insert((Table::Reactions, key), added.then(Vec::new));
                }
                Write::Pin {
                    conversation,
                    target,
                    pinned,
                } => {
                    let key = seq_key(&id_prefix(&conversation.to_string()), target.get());
                    let value = if *pinned {
                        // Strictly increasing within a commit so pin order is kept.
                        pin_clock += 1;
                        self.last_pin_ms.store(pin_clock, Ordering::Relaxed);
                        Some(pin_clock.to_be_bytes().to_vec())
                    } else {
                        None
                    };
                    rows.insert((Table::Pins, key), value);
                }
                Write::Receipt {
                    conversation,
                    user,
                    delivered,
                    read,
                } => {
                    let key = id_pair_key(&id_prefix(&conversation.to_string()), user.as_str());
                    let mut value = Vec::with_capacity(16);
                    value.extend_from_slice(&delivered.get().to_be_bytes());
                    value.extend_from_slice(&read.get().to_be_bytes());
                    rows.insert((Table::Receipts, key), Some(value));
                }
                Write::MediaRef {
                    media,
                    conversation,
                } => {
                    let key = media_ref_key(media, conversation);
                    rows.insert((Table::MediaRefs, key), Some(Vec::new()));
                }
                Write::Channel { id, record } => {
                    rows.insert(
                        (Table::Channels, id.get().to_be_bytes().to_vec()),
                        Some(encode_channel_row(record)),
                    );
                }
                Write::Schedule { channel, post } => {
                    let key = id_pair_key(&scheduled_prefix(*channel), post.client_msg_id.as_str());
                    rows.insert((Table::Scheduled, key), Some(encode_scheduled_row(post)));
                    rows.insert(
                        (
                            Table::Due,
                            due_key(post.at_ms, *channel, &post.client_msg_id),
                        ),
                        Some(Vec::new()),
                    );
                }
                Write::Unschedule {
                    channel,
                    client_msg_id,
                    at_ms,
                } => {
                    let key = id_pair_key(&scheduled_prefix(*channel), client_msg_id.as_str());
                    rows.insert((Table::Scheduled, key), None);
                    rows.insert((Table::Due, due_key(*at_ms, *channel, client_msg_id)), None);
                }
                Write::View {
                    conversation,
                    post,
                    user,
                } => {
                    let mut key = post_key(conversation, *post);
                    push_id(&mut key, user.as_str());
                    rows.insert((Table::Viewers, key), Some(Vec::new()));
                }
                Write::Counter {
                    conversation,
                    post,
                    kind,
                    value,
                } => {
                    let mut key = post_key(conversation, *post);
                    key.push(kind.to_byte());
                    rows.insert((Table::Counters, key), Some(value.to_be_bytes().to_vec()));
                }
            }
        }
        // Without a durability mode the batch would stay in a user-space buffer: SyncAll makes
        // `commit` append the batch to the journal and fsync it before returning.
        let mut batch = self
            .engine
            .db
            .batch()
            .durability(Some(PersistMode::SyncAll));
        for ((table, key), value) in rows {
            let keyspace = self.engine.keyspace(table);
            match value {
                Some(value) => batch.insert(keyspace, key, value),
                None => batch.remove(keyspace, key),
            }
        }
        batch.commit().map_err(engine_error)
    }
}
