//! The pure commerce core's order transitions: what one shop actor spends per order, without the
//! actor, its log, storage or the payment provider.
//!
//! The harness is `piazza_node::bench::CommerceBench` (`node/src/bench.rs`, hidden from the
//! docs): one shop's `Shop` with a catalog and existing orders already paid in full, driven exactly
//! as the shop actor drives it (cart → checkout, order commands, provider notifications), at a
//! fixed `now`.
//!
//! Ids:
//! - `commerce/step/<step>/orders_10000`: one transition of one order on a shop with 1,000
//!   products and 10,000 existing paid orders: `place` (add one unit to the cart and check out:
//!   price, the customer's unpaid-order count, stock reservation), `accept` (owner),
//!   `request_payment` (customer, in full: the authorization request), `authorized` (the
//!   provider's notification; the capture request follows), `captured` (the order becomes paid,
//!   stock is committed), `fulfil` (owner). Orders are brought to the step in chunks of 1,000
//!   outside the timed section, the step is timed over the chunk, then the chunk is retired
//!   (delivered, completed, archived), also untimed, so the shop keeps 10,000 orders throughout.
//! - `commerce/lifecycle/orders_<n>`: the six steps of one order in a row, on shops with 100 and
//!   10,000 existing orders (time per iteration = one order from cart to fulfilment).
//! - `commerce/next_deadline/orders_<n>`: `Shop::next_deadline_ms`, which the shop actor calls
//!   after every message it handles to arm its timer (a pass over every order in memory).
//!
//! Every step checks its outcome (a refused transition, or an order that is not paid after its
//! capture, panics the bench). `cargo test --benches` (no `--bench` argument: criterion runs each
//! bench once) uses shops of 100 and 1,000 orders instead, so CI stays quick in a debug build.
//!
//! Run: `cargo bench -p piazza-benches --bench commerce` (figures in benches/README.md).

use std::fmt::Display;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use piazza_node::bench::{CommerceBench, CommerceStep};

/// Products in the shop's catalog.
const PRODUCTS: usize = 1_000;
/// Existing paid orders: a small shop and a busy one (the per-step benches use the busy one).
const ORDERS_SCALE: [usize; 2] = [100, 10_000];
/// The same in a test run (`cargo test --benches`), which only checks that every bench runs.
const ORDERS_SCALE_TEST: [usize; 2] = [100, 1_000];
/// Orders prepared, timed and retired together: at most 10 unpaid orders per customer and 1,000
/// customers allow up to 10,000; a chunk keeps the untimed work in large, cheap batches.
const CHUNK: u64 = 1_000;

/// The value, or a panic naming what failed: a bench that cannot run must not report figures.
fn ok<T, E: Display>(what: &str, result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what}: {e}"),
    }
}

fn shop(orders: usize) -> CommerceBench {
    ok("build the shop", CommerceBench::new(PRODUCTS, orders))
}

/// The shop sizes of this run: criterion passes `--bench` under `cargo bench` only.
fn orders_scale() -> [usize; 2] {
    if std::env::args().any(|arg| arg == "--bench") {
        ORDERS_SCALE
    } else {
        ORDERS_SCALE_TEST
    }
}

/// Runs `iters` orders through `step`, timing only the step; returns the time spent in it.
fn time_step(
    bench: &mut CommerceBench,
    next: &mut u64,
    step: CommerceStep,
    iters: u64,
) -> Duration {
    let mut spent = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let count = left.min(CHUNK);
        let first = *next;
        *next += count;
        for i in first..first + count {
            ok("prepare", bench.prepare(step, i));
        }
        let start = Instant::now();
        for i in first..first + count {
            ok(step.name(), bench.step(step, black_box(i)));
        }
        spent += start.elapsed();
        for i in first..first + count {
            ok("retire", bench.retire(step, i));
        }
        left -= count;
    }
    spent
}

/// Runs `iters` whole lifecycles, timing place → fulfil; returns the time spent in them.
fn time_lifecycle(bench: &mut CommerceBench, next: &mut u64, iters: u64) -> Duration {
    let mut spent = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let count = left.min(CHUNK);
        let first = *next;
        *next += count;
        let start = Instant::now();
        for i in first..first + count {
            ok("lifecycle", bench.place_accept_pay_fulfil(black_box(i)));
        }
        spent += start.elapsed();
        for i in first..first + count {
            ok("retire", bench.retire(CommerceStep::Fulfil, i));
        }
        left -= count;
    }
    spent
}

fn steps(c: &mut Criterion, bench: &mut CommerceBench) {
    let orders = bench.orders();
    let mut group = c.benchmark_group("commerce/step");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_secs(1));
    let mut next = 0u64;
    for step in CommerceStep::ALL {
        group.bench_function(
            BenchmarkId::new(step.name(), format!("orders_{orders}")),
            |b| b.iter_custom(|iters| time_step(bench, &mut next, step, iters)),
        );
    }
    assert_eq!(bench.orders(), orders, "every bench order was retired");
    group.finish();
}

fn lifecycle(c: &mut Criterion, shops: &mut [CommerceBench]) {
    let mut group = c.benchmark_group("commerce/lifecycle");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_secs(1));
    for bench in shops {
        let orders = bench.orders();
        // Bench order ids only need to be unique among the orders in memory, and every one is
        // retired before the next chunk: start past the per-step benches' ids all the same.
        let mut next = 1u64 << 40;
        group.bench_function(
            BenchmarkId::from_parameter(format!("orders_{orders}")),
            |b| b.iter_custom(|iters| time_lifecycle(bench, &mut next, iters)),
        );
        assert_eq!(bench.orders(), orders, "every bench order was retired");
    }
    group.finish();
}

fn next_deadline(c: &mut Criterion, shops: &[CommerceBench]) {
    let mut group = c.benchmark_group("commerce/next_deadline");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_secs(1));
    for bench in shops {
        group.bench_function(
            BenchmarkId::from_parameter(format!("orders_{}", bench.orders())),
            |b| b.iter(|| black_box(bench.next_deadline_ms())),
        );
    }
    group.finish();
}

/// Builds each shop once (a busy one takes a while: every placement counts the customer's
/// unpaid orders over all orders) and runs every group on it.
fn commerce(c: &mut Criterion) {
    let mut shops: Vec<CommerceBench> = orders_scale().into_iter().map(shop).collect();
    if let Some(busy) = shops.last_mut() {
        steps(c, busy);
    }
    lifecycle(c, &mut shops);
    next_deadline(c, &shops);
}

criterion_group!(benches, commerce);
criterion_main!(benches);
