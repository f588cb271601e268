//! Single-process micro-benchmarks (criterion) of the hot paths:
//!
//! * `alloc_free_pair`: allocate a 64-byte packet and free it, for `ssm`
//!   (default per-process cache of 32 blocks, and with no cache, which
//!   takes the shard free lists every time) and, for reference, the mutex
//!   baseline as its best case (`c-best`: plain robust mutexes, cached pid)
//!   and as shipped (`c-shipped`: priority-inheriting mutexes, `getpid()`
//!   per allocation);
//! * `burst_256`: 256 allocations, then the 256 frees (throughput is per
//!   block), which runs the cache empty and full and so moves chains
//!   between it and the shards;
//! * `handle`: `into_handle` + `Pool::get` + drop of a fresh packet
//!   (allocation included), and the plain cycle `into_handle` / `get` on
//!   one packet (no allocation);
//! * `window`: the packet-window operations on one packet, each paired with
//!   its inverse so the window is the same at every iteration.
//!
//! `ssm` pools are private (`Pool::private`: the same layout and algorithm
//! in heap memory); baseline pools are POSIX shared memory objects named
//! after the pid, unlinked as soon as they are created (the mapping stays
//! valid). `cargo bench --bench micro -- --quick` runs criterion's quick
//! mode.

// Bench targets are compiled with `cfg(test)` but, with `harness = false`,
// without their `#[test]` functions, so the imports of the baseline's test
// modules look unused.
#[allow(unused_imports)]
#[path = "baseline/mod.rs"]
mod baseline;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ssm::{Pool, PoolConfig};

use baseline::{BaselinePool, Variant, DEFAULT_HEADSPACE, DEFAULT_SHARDS, DEFAULT_TAILSPACE};

/// Payload of every packet.
const PAYLOAD: usize = 64;
/// Blocks of the one size class of every pool.
const BLOCKS: u32 = 4096;
/// Block size: room for the payload after either implementation's 256
/// bytes of headspace and 32 of tailspace (and the baseline's header).
const BLOCK: u32 = 512;
/// Allocations per burst.
const BURST: usize = 256;

/// A private `ssm` pool with `cache` blocks of per-process cache.
fn ssm_pool(cache: u32) -> Pool {
    let cfg = PoolConfig::new().class(BLOCK, BLOCKS).cache_size(cache);
    Pool::private(&cfg).expect("create a private ssm pool")
}

/// A baseline pool of the variant `v`, already unlinked.
fn baseline_pool(v: Variant) -> BaselinePool {
    let name = format!("/ssm-micro-{}-{}", std::process::id(), v.label());
    BaselinePool::unlink(&name);
    let pool = BaselinePool::create(
        &name,
        &[(BLOCK, BLOCKS)],
        DEFAULT_SHARDS,
        DEFAULT_HEADSPACE,
        DEFAULT_TAILSPACE,
        v,
    )
    .expect("create a baseline pool");
    BaselinePool::unlink(&name);
    pool
}

/// Short measurements: the figures are stable within a second.
fn configured() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1))
}

/// One allocation and its free.
fn alloc_free_pair(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_free_pair");
    g.throughput(Throughput::Elements(1));
    for (label, cache) in [("ssm", 32), ("ssm-nocache", 0)] {
        let pool = ssm_pool(cache);
        g.bench_function(label, |b| {
            b.iter(|| {
                let p = pool.alloc(PAYLOAD).expect("alloc");
                black_box(&p);
                drop(p)
            })
        });
    }
    for v in [Variant::BEST, Variant::SHIPPED] {
        let pool = baseline_pool(v);
        g.bench_function(v.label(), |b| {
            b.iter(|| {
                let p = pool.alloc(PAYLOAD).expect("alloc");
                black_box(&p);
                pool.free(p)
            })
        });
    }
    g.finish();
}

/// 256 allocations, then 256 frees.
fn burst(c: &mut Criterion) {
    let mut g = c.benchmark_group("burst_256");
    g.throughput(Throughput::Elements(BURST as u64));
    for (label, cache) in [("ssm", 32), ("ssm-nocache", 0)] {
        let pool = ssm_pool(cache);
        let mut held = Vec::with_capacity(BURST);
        g.bench_function(label, |b| {
            b.iter(|| {
                held.extend((0..BURST).map(|_| pool.alloc(PAYLOAD).expect("alloc")));
                held.clear();
            })
        });
    }
    for v in [Variant::BEST, Variant::SHIPPED] {
        let pool = baseline_pool(v);
        let mut held = Vec::with_capacity(BURST);
        g.bench_function(v.label(), |b| {
            b.iter(|| {
                held.extend((0..BURST).map(|_| pool.alloc(PAYLOAD).expect("alloc")));
                for off in held.drain(..) {
                    pool.free(off);
                }
            })
        });
    }
    g.finish();
}

/// Handles: the hand-off path within one process.
fn handle(c: &mut Criterion) {
    let mut g = c.benchmark_group("handle");
    let pool = ssm_pool(32);
    g.bench_function("alloc+into_handle+get+drop", |b| {
        b.iter(|| {
            let h = pool.alloc(PAYLOAD).expect("alloc").into_handle();
            drop(black_box(pool.get(black_box(h)).expect("get")));
        })
    });
    let mut pkt = Some(pool.alloc(PAYLOAD).expect("alloc"));
    g.bench_function("into_handle+get", |b| {
        b.iter(|| {
            let h = pkt.take().expect("packet").into_handle();
            pkt = Some(pool.get(black_box(h)).expect("get"));
        })
    });
    drop(pkt);
    g.finish();
}

/// The packet-window operations, each with its inverse.
fn window(c: &mut Criterion) {
    let mut g = c.benchmark_group("window");
    let pool = ssm_pool(32);
    let mut pkt = pool.alloc(PAYLOAD).expect("alloc");
    g.bench_function("push_head+pull_head", |b| {
        b.iter(|| {
            pkt.push_head(black_box(20)).expect("push_head")[0] = 0x45;
            pkt.pull_head(black_box(20)).expect("pull_head");
        })
    });
    g.bench_function("push_tail+pull_tail", |b| {
        b.iter(|| {
            pkt.push_tail(black_box(4)).expect("push_tail")[0] = 0xfc;
            pkt.pull_tail(black_box(4)).expect("pull_tail");
        })
    });
    g.bench_function("truncate+push_tail", |b| {
        b.iter(|| {
            pkt.truncate(black_box(PAYLOAD / 2)).expect("truncate");
            pkt.push_tail(black_box(PAYLOAD / 2)).expect("push_tail");
        })
    });
    g.bench_function("len+deref", |b| b.iter(|| black_box(&pkt[..]).len()));
    g.finish();
    drop(pkt);
}

criterion_group! {
    name = benches;
    config = configured();
    targets = alloc_free_pair, burst, handle, window
}
criterion_main!(benches);
