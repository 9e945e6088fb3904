//! What one actor hop costs: ractor 0.16 (the node's actor library) on tokio's multi-thread runtime
//! with 2 workers, against a bare tokio queue doing the same job.
//!
//! - `actor_hop/cast_10k/{ractor,tokio_mpsc}`: 10,000 one-way messages to one actor (a task for
//!   the baseline) that counts them, then one request that answers with the count, which must be
//!   10,000 more than before. Elements = messages, so elements/s = one-way hops per second.
//! - `actor_hop/call/{ractor,ractor_where_is,tokio_mpsc_oneshot}`: one request and its answer,
//!   sequentially (the session → conversation actor pattern). `ractor` builds the reply port from
//!   a tokio oneshot and bounds the wait with `tokio::time::timeout`, exactly as the node's router
//!   does (`cluster/router.rs`, `ask_conversation`); `ractor_where_is` also looks the actor up by
//!   name in ractor's registry first, as the router does for an active conversation. Time per
//!   iteration = one round trip.
//!
//! Every answer is checked (the counter must have seen every message, every echo must return its
//! number), so a lost or misrouted message panics the bench.
//!
//! Run: `cargo bench -p piazza-benches --bench actor_hop` (figures in benches/README.md).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot};

/// One-way messages per iteration of the cast benches.
const CASTS: u64 = 10_000;
/// Longest wait for an answer (it takes microseconds).
const WAIT: Duration = Duration::from_secs(10);
/// Registry name of the echo actor.
const ECHO_NAME: &str = "bench-echo";
/// Capacity of the baseline task's queue: a round of casts plus its two requests, twice.
const TASK_QUEUE_CAPACITY: usize = 2 * (CASTS as usize + 2);
/// Messages the baseline task handles at most: only bounds its loop.
const MESSAGES_MAX: u64 = 1 << 40;

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot build the tokio runtime: {e}"),
    }
}

/// Messages of the bench actor (and of the baseline task).
#[derive(Debug)]
enum Msg {
    /// Count one.
    Tick,
    /// Answer with the count so far.
    Count(RpcReplyPort<u64>),
    /// Answer with the same number.
    Echo(u64, RpcReplyPort<u64>),
}

/// Counts ticks and answers requests.
#[derive(Debug)]
struct Counter;

impl Actor for Counter {
    type Msg = Msg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Msg>,
        _args: (),
    ) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
        message: Msg,
        count: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Msg::Tick => *count += 1,
            Msg::Count(reply) => {
                let _ = reply.send(*count);
            }
            Msg::Echo(n, reply) => {
                let _ = reply.send(n);
            }
        }
        Ok(())
    }
}

/// The node's request pattern: a oneshot as the reply port, a bounded wait.
async fn ask(actor: &ActorRef<Msg>, build: impl FnOnce(RpcReplyPort<u64>) -> Msg) -> u64 {
    let (tx, rx) = oneshot::channel();
    if let Err(e) = actor.cast(build(tx.into())) {
        panic!("cast to the actor: {e}");
    }
    match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => panic!("the actor dropped the reply port"),
        Err(_) => panic!("the actor did not answer within {WAIT:?}"),
    }
}

/// The baseline: a task draining a queue, answering through oneshots. The queue is bounded (as
/// every queue in the workspace) but large enough that a round of casts never waits for room,
/// like ractor's unbounded mailbox.
fn spawn_task(rt: &tokio::runtime::Runtime) -> TaskQueue {
    let (tx, mut rx) = mpsc::channel::<(u64, Option<oneshot::Sender<u64>>)>(TASK_QUEUE_CAPACITY);
    rt.spawn(async move {
        let mut count = 0u64;
        // Ends when the sender is dropped; bounded by MESSAGES_MAX as well.
        for _ in 0..MESSAGES_MAX {
            let Some((n, reply)) = rx.recv().await else {
                break;
            };
            match reply {
                None => count += 1,
                // 0 asks for the count, anything else is echoed.
                Some(reply) => {
                    let _ = reply.send(if n == 0 { count } else { n });
                }
            }
        }
    });
    tx
}

async fn task_ask(tx: &TaskQueue, n: u64) -> u64 {
    let (reply, rx) = oneshot::channel();
    if tx.try_send((n, Some(reply))).is_err() {
        panic!("the baseline task ended");
    }
    match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(answer)) => answer,
        _ => panic!("the baseline task did not answer"),
    }
}

type TaskQueue = mpsc::Sender<(u64, Option<oneshot::Sender<u64>>)>;

/// Runs `iters` rounds of `round` in a task on the runtime's workers (where the node's actors
/// run too, not on criterion's thread) and returns the time they took.
fn on_worker<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, round: F) -> Duration
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Duration> + Send,
{
    let task = rt.spawn(async move {
        let mut total = Duration::ZERO;
        for i in 0..iters {
            total += round(i).await;
        }
        total
    });
    match rt.block_on(task) {
        Ok(total) => total,
        Err(e) => panic!("bench task failed: {e}"),
    }
}

async fn cast_round_ractor(actor: ActorRef<Msg>) -> Duration {
    let before = ask(&actor, Msg::Count).await;
    let start = Instant::now();
    for _ in 0..CASTS {
        if let Err(e) = actor.cast(Msg::Tick) {
            panic!("cast: {e}");
        }
    }
    let after = ask(&actor, Msg::Count).await;
    let elapsed = start.elapsed();
    assert!(
        after - before == CASTS,
        "the actor counted {} of {CASTS}",
        after - before
    );
    elapsed
}

async fn cast_round_task(task: TaskQueue) -> Duration {
    let before = task_ask(&task, 0).await;
    let start = Instant::now();
    for _ in 0..CASTS {
        if task.try_send((1, None)).is_err() {
            panic!("the baseline task ended or its queue is full");
        }
    }
    let after = task_ask(&task, 0).await;
    let elapsed = start.elapsed();
    assert!(
        after - before == CASTS,
        "the task counted {} of {CASTS}",
        after - before
    );
    elapsed
}

async fn call_round_ractor(actor: ActorRef<Msg>, n: u64, look_up: bool) -> Duration {
    let start = Instant::now();
    let actor = if look_up {
        // As the router does for an active conversation: typed lookup by registered name.
        let Some(found) = ActorRef::<Msg>::where_is(ECHO_NAME) else {
            panic!("{ECHO_NAME} is not registered");
        };
        found
    } else {
        actor
    };
    let echoed = ask(&actor, |reply| Msg::Echo(n, reply)).await;
    let elapsed = start.elapsed();
    assert!(echoed == n, "echo {echoed} for {n}");
    elapsed
}

async fn call_round_task(task: TaskQueue, n: u64) -> Duration {
    let start = Instant::now();
    let echoed = task_ask(&task, n).await;
    let elapsed = start.elapsed();
    assert!(echoed == n, "echo {echoed} for {n}");
    elapsed
}

fn hops(c: &mut Criterion) {
    let rt = runtime();
    let (actor, actor_task) =
        match rt.block_on(Actor::spawn(Some(ECHO_NAME.to_owned()), Counter, ())) {
            Ok(spawned) => spawned,
            Err(e) => panic!("spawn the bench actor: {e}"),
        };
    let task = spawn_task(&rt);

    let mut group = c.benchmark_group("actor_hop/cast_10k");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(CASTS));
    group.bench_function("ractor", |b| {
        b.iter_custom(|iters| {
            let actor = actor.clone();
            on_worker(&rt, iters, move |_| cast_round_ractor(actor.clone()))
        })
    });
    group.bench_function("tokio_mpsc", |b| {
        b.iter_custom(|iters| {
            let task = task.clone();
            on_worker(&rt, iters, move |_| cast_round_task(task.clone()))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("actor_hop/call");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    // Echoed numbers start at 1 (0 asks the baseline task for its count).
    group.bench_function("ractor", |b| {
        b.iter_custom(|iters| {
            let actor = actor.clone();
            on_worker(&rt, iters, move |i| {
                call_round_ractor(actor.clone(), i + 1, false)
            })
        })
    });
    group.bench_function("ractor_where_is", |b| {
        b.iter_custom(|iters| {
            let actor = actor.clone();
            on_worker(&rt, iters, move |i| {
                call_round_ractor(actor.clone(), i + 1, true)
            })
        })
    });
    group.bench_function("tokio_mpsc_oneshot", |b| {
        b.iter_custom(|iters| {
            let task = task.clone();
            on_worker(&rt, iters, move |i| call_round_task(task.clone(), i + 1))
        })
    });
    group.finish();

    actor.stop(None);
    drop(task);
    if let Err(e) = rt.block_on(actor_task) {
        panic!("the bench actor failed: {e}");
    }
}

criterion_group!(benches, hops);
criterion_main!(benches);
