//! Storage engine comparison for Piazza's durable append path: redb 4 vs fjall 3.
//!
//! The design's durability path is *group commit*: one writer thread drains a bounded queue,
//! commits a batch of N records with ONE fsync, then acks every sender. This bench times exactly
//! that commit for both engines, plus the "last 50 messages of a conversation" reverse range scan
//! that history pages and Sync perform.
//!
//! Record layout: key = 16-byte conversation key + seq (24 bytes), value = 200 bytes. Batches
//! spread over `CONVERSATIONS` conversations round-robin, each with its own increasing seq, as a
//! busy node would see. Each write benchmark gets a fresh database preloaded with 12,800 records.
//!
//! Groups and ids:
//! - `storage/fsync_baseline/append_4k_fsync`: raw 4 KiB append + fsync, the floor under every
//!   durable commit (and a contention gauge: it jumps from ~0.3 ms to ~4 ms when both cores are
//!   busy with other work).
//! - `storage/group_commit/{redb,redb_quick_repair,redb_bytes,fjall}/{1,16,64,256,1024}`:
//!   - `redb`: key `([u8; 16], u64)`, default `Durability::Immediate` commit (1-phase, one fsync).
//!   - `redb_quick_repair`: same with `set_quick_repair(true)` (2-phase commit, two fsyncs, near
//!     instant reopen after a crash instead of a full-file repair).
//!   - `redb_bytes`: key `[u8; 24]` (`conv ++ seq_be`), the same bytes fjall stores.
//!   - `fjall`: `Database::batch().durability(Some(PersistMode::SyncAll))`: the batch is appended
//!     to the journal and the journal file is fsynced before `commit()` returns. Without
//!     `.durability(..)` a batch stays in fjall's user-space journal buffer (lost even on a process
//!     crash).
//! - `storage/read_last_50/{redb,redb_bytes,fjall_memtable,fjall_flushed}`: newest 50 records of
//!   one conversation out of 128,000, reverse range scan; fjall both from the memtable and after
//!   flushing it to an on-disk table.
//!
//! The data directory is a tempdir under `$PIAZZA_BENCH_DIR` (default: the system temp dir). It
//! must be on a real disk, not tmpfs or /dev/shm, since the fsync cost is the point.
//!
//! Run: `cargo bench -p piazza-benches --bench storage`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fjall::{KeyspaceCreateOptions, PersistMode};
use redb::{ReadableDatabase, TableDefinition};

/// Batch sizes for the group-commit benchmark.
const BATCH_SIZES: [usize; 5] = [1, 16, 64, 256, 1024];
/// Conversations the appends are spread over.
const CONVERSATIONS: u64 = 64;
/// Records per conversation written before the read benchmark.
const READ_PRELOAD_PER_CONVERSATION: u64 = 2_000;
/// Records per conversation written before each write benchmark, so the tree is not empty.
const WRITE_PRELOAD_PER_CONVERSATION: u64 = 200;
/// Page size of a history read.
const HISTORY_PAGE: usize = 50;
/// Size of one stored message record.
const VALUE_LEN: usize = 200;

/// redb table: key = (conversation key, seq). Tuple keys compare element-wise, so all records of a
/// conversation are contiguous and ordered by seq.
const REDB_MESSAGES: TableDefinition<'static, ([u8; 16], u64), &[u8]> =
    TableDefinition::new("messages");
/// Alternative redb layout: the same 24 bytes as fjall (`conv ++ seq_be`) in a fixed-size array.
const REDB_MESSAGES_BYTES: TableDefinition<'static, [u8; 24], &[u8]> =
    TableDefinition::new("messages_bytes");

fn conversation_key(conv: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&0x5049_415a_5a41_0000_u64.to_be_bytes());
    k[8..].copy_from_slice(&conv.to_be_bytes());
    k
}

fn flat_key(conv: &[u8; 16], seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(conv);
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn message_value(seed: u64) -> [u8; VALUE_LEN] {
    // Cheap, non-constant bytes (fjall is built without lz4 here, redb never compresses).
    let mut v = [0u8; VALUE_LEN];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in &mut v {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

/// Hands out (conversation, seq) pairs round-robin over `CONVERSATIONS`.
struct Appender {
    convs: Vec<[u8; 16]>,
    next: u64,
    value: [u8; VALUE_LEN],
}

impl Appender {
    fn new() -> Self {
        Self {
            convs: (0..CONVERSATIONS).map(conversation_key).collect(),
            next: 0,
            value: message_value(42),
        }
    }

    fn next_record(&mut self) -> (&[u8; 16], u64) {
        let n = self.next;
        self.next += 1;
        let idx = usize::try_from(n % CONVERSATIONS).unwrap();
        (&self.convs[idx], n / CONVERSATIONS)
    }
}

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("PIAZZA_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::Builder::new()
        .prefix("piazza-storage-bench")
        .tempdir_in(base)
        .unwrap()
}

// ---------------------------------------------------------------- redb

fn redb_open(dir: &tempfile::TempDir) -> redb::Database {
    let db = redb::Database::create(dir.path().join("piazza.redb")).unwrap();
    // Create both tables up front.
    let tx = db.begin_write().unwrap();
    drop(tx.open_table(REDB_MESSAGES).unwrap());
    drop(tx.open_table(REDB_MESSAGES_BYTES).unwrap());
    tx.commit().unwrap();
    db
}

/// One durable group commit of `n` records (tuple key). Durability::Immediate is the default; it is
/// set explicitly here to document the contract.
///
/// `quick_repair` = true makes redb persist its allocator state and use 2-phase commit (two
/// fsyncs) so that reopening after a crash is near-instant instead of a full-file repair.
fn redb_commit_batch(db: &redb::Database, app: &mut Appender, n: usize, quick_repair: bool) {
    let mut tx = db.begin_write().unwrap();
    tx.set_durability(redb::Durability::Immediate).unwrap();
    tx.set_quick_repair(quick_repair);
    {
        let mut table = tx.open_table(REDB_MESSAGES).unwrap();
        for _ in 0..n {
            let value = app.value;
            let (conv, seq) = app.next_record();
            table.insert((*conv, seq), value.as_slice()).unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Same as `redb_commit_batch`, flat 24-byte key.
fn redb_bytes_commit_batch(db: &redb::Database, app: &mut Appender, n: usize) {
    let tx = db.begin_write().unwrap();
    {
        let mut table = tx.open_table(REDB_MESSAGES_BYTES).unwrap();
        for _ in 0..n {
            let value = app.value;
            let (conv, seq) = app.next_record();
            table.insert(flat_key(conv, seq), value.as_slice()).unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Last `HISTORY_PAGE` records of `conv`, newest first.
fn redb_last_page(db: &redb::Database, conv: [u8; 16]) -> usize {
    let rx = db.begin_read().unwrap();
    let table = rx.open_table(REDB_MESSAGES).unwrap();
    let mut bytes = 0;
    for item in table
        .range((conv, 0u64)..=(conv, u64::MAX))
        .unwrap()
        .rev()
        .take(HISTORY_PAGE)
    {
        let (k, v) = item.unwrap();
        black_box(k.value());
        bytes += black_box(v.value()).len();
    }
    bytes
}

fn redb_bytes_last_page(db: &redb::Database, conv: [u8; 16]) -> usize {
    let rx = db.begin_read().unwrap();
    let table = rx.open_table(REDB_MESSAGES_BYTES).unwrap();
    let mut bytes = 0;
    for item in table
        .range(flat_key(&conv, 0)..=flat_key(&conv, u64::MAX))
        .unwrap()
        .rev()
        .take(HISTORY_PAGE)
    {
        let (k, v) = item.unwrap();
        black_box(k.value());
        bytes += black_box(v.value()).len();
    }
    bytes
}

// ---------------------------------------------------------------- fjall

fn fjall_open(dir: &tempfile::TempDir) -> (fjall::Database, fjall::Keyspace) {
    let db = fjall::Database::builder(dir.path().join("fjall"))
        .open()
        .unwrap();
    let ks = db
        .keyspace("messages", KeyspaceCreateOptions::default)
        .unwrap();
    (db, ks)
}

/// One durable group commit of `n` records: write batch appended to the journal, journal fsynced
/// (`PersistMode::SyncAll`) before `commit()` returns.
fn fjall_commit_batch(db: &fjall::Database, ks: &fjall::Keyspace, app: &mut Appender, n: usize) {
    let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
    for _ in 0..n {
        let value = app.value;
        let (conv, seq) = app.next_record();
        batch.insert(ks, flat_key(conv, seq), value.as_slice());
    }
    batch.commit().unwrap();
}

fn fjall_last_page(ks: &fjall::Keyspace, conv: [u8; 16]) -> usize {
    let mut bytes = 0;
    for guard in ks
        .range(flat_key(&conv, 0)..=flat_key(&conv, u64::MAX))
        .rev()
        .take(HISTORY_PAGE)
    {
        let (k, v) = guard.into_inner().unwrap();
        black_box(&k);
        bytes += black_box(&v).len();
    }
    bytes
}

// ---------------------------------------------------------------- benches

/// Raw cost of one 4 KiB append + `fsync` on the bench disk: the floor under every durable commit,
/// and a way to tell a contended run (fsync jumps from ~0.3 ms to ~4 ms when both cores are busy).
fn fsync_baseline(c: &mut Criterion) {
    use std::io::Write as _;
    let mut group = c.benchmark_group("storage/fsync_baseline");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let dir = bench_dir();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("probe"))
        .unwrap();
    let page = [0x5Au8; 4096];
    group.bench_function("append_4k_fsync", |b| {
        b.iter(|| {
            file.write_all(&page).unwrap();
            file.sync_all().unwrap();
        });
    });
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage/group_commit");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    let preload = usize::try_from(WRITE_PRELOAD_PER_CONVERSATION * CONVERSATIONS).unwrap();

    for &n in &BATCH_SIZES {
        group.throughput(Throughput::Elements(n as u64));

        for (name, quick_repair) in [("redb", false), ("redb_quick_repair", true)] {
            let dir = bench_dir();
            let db = redb_open(&dir);
            let mut app = Appender::new();
            for _ in 0..preload / 1024 {
                redb_commit_batch(&db, &mut app, 1024, quick_repair);
            }
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| redb_commit_batch(&db, &mut app, n, quick_repair));
            });
        }

        {
            let dir = bench_dir();
            let db = redb_open(&dir);
            let mut app = Appender::new();
            for _ in 0..preload / 1024 {
                redb_bytes_commit_batch(&db, &mut app, 1024);
            }
            group.bench_function(BenchmarkId::new("redb_bytes", n), |b| {
                b.iter(|| redb_bytes_commit_batch(&db, &mut app, n));
            });
        }

        {
            let dir = bench_dir();
            let (db, ks) = fjall_open(&dir);
            let mut app = Appender::new();
            for _ in 0..preload / 1024 {
                fjall_commit_batch(&db, &ks, &mut app, 1024);
            }
            group.bench_function(BenchmarkId::new("fjall", n), |b| {
                b.iter(|| fjall_commit_batch(&db, &ks, &mut app, n));
            });
        }
    }
    group.finish();
}

fn read_last_page(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage/read_last_50");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(HISTORY_PAGE as u64));

    let total = usize::try_from(READ_PRELOAD_PER_CONVERSATION * CONVERSATIONS).unwrap();
    // A conversation in the middle of the key space.
    let conv = conversation_key(CONVERSATIONS / 2);

    {
        let dir = bench_dir();
        let db = redb_open(&dir);
        let mut app = Appender::new();
        let mut app_bytes = Appender::new();
        for _ in 0..total / 1024 {
            redb_commit_batch(&db, &mut app, 1024, false);
            redb_bytes_commit_batch(&db, &mut app_bytes, 1024);
        }
        assert_eq!(redb_last_page(&db, conv), HISTORY_PAGE * VALUE_LEN);
        group.bench_function("redb", |b| b.iter(|| redb_last_page(&db, black_box(conv))));
        group.bench_function("redb_bytes", |b| {
            b.iter(|| redb_bytes_last_page(&db, black_box(conv)));
        });
    }

    {
        let dir = bench_dir();
        let (db, ks) = fjall_open(&dir);
        let mut app = Appender::new();
        for _ in 0..total / 1024 {
            fjall_commit_batch(&db, &ks, &mut app, 1024);
        }
        assert_eq!(fjall_last_page(&ks, conv), HISTORY_PAGE * VALUE_LEN);
        // Everything is still in the active memtable (28 MiB < 64 MiB default).
        group.bench_function("fjall_memtable", |b| {
            b.iter(|| fjall_last_page(&ks, black_box(conv)));
        });
        // Steady state for older history: flushed to an on-disk table (block cache warm).
        ks.rotate_memtable_and_wait().unwrap();
        assert_eq!(fjall_last_page(&ks, conv), HISTORY_PAGE * VALUE_LEN);
        group.bench_function("fjall_flushed", |b| {
            b.iter(|| fjall_last_page(&ks, black_box(conv)));
        });
        drop(db);
    }
    group.finish();
}

criterion_group!(benches, fsync_baseline, group_commit, read_last_page);
criterion_main!(benches);
