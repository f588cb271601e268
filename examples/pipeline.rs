//! A multi-process packet pipeline over one shared pool and one ring.
//!
//! Producer processes allocate packets of mixed sizes, fill them, stamp a
//! checksum into the trailer and write the handles to a ring; a consumer
//! process reads the handles, takes each packet over, verifies it and frees
//! it. At the end the parent prints throughput and the pool's statistics,
//! audits the pool, and exits non-zero on any checksum mismatch, loss or
//! leak.
//!
//! ```text
//! cargo run --release --example pipeline -- [--packets N] [--producers K]
//! ```

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::exit;
use std::time::{Duration, Instant};

use ssm::{Handle, Pool, PoolConfig, Ring, RingConfig};

const SIZES: [usize; 6] = [64, 200, 576, 1400, 4000, 9000];
const T: Option<Duration> = Some(Duration::from_secs(30));

/// A checksum over 8-byte words (and the tail bytes): cheap enough not to
/// hide the pool's and the ring's cost, and sensitive to any changed byte.
fn checksum(data: &[u8]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x0100_0000_01B3);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
    h
}

fn fill(data: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    let mut words = data.chunks_exact_mut(8);
    for w in &mut words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
    for b in words.into_remainder() {
        *b = x as u8;
    }
}

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        panic!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here only.
    unsafe {
        (
            OwnedFd::from_raw_fd(fds[0]).into(),
            OwnedFd::from_raw_fd(fds[1]).into(),
        )
    }
}

fn fork() -> i32 {
    // SAFETY: this program is single-threaded when it forks.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    pid
}

fn producer(pool_name: &str, ring_name: &str, id: u64, packets: u64) -> i32 {
    let pool = Pool::open(pool_name).expect("producer: open pool");
    let ring = Ring::open(ring_name).expect("producer: open ring");
    for i in 0..packets {
        let len = SIZES[((i + id) % SIZES.len() as u64) as usize];
        let mut p = pool.alloc_timeout(len, T).expect("producer: allocate");
        fill(&mut p, (id << 40) ^ i);
        let sum = checksum(&p);
        p.push_tail(8)
            .expect("tailspace")
            .copy_from_slice(&sum.to_le_bytes());
        ring.write_timeout(p.into_handle(), T)
            .expect("producer: write ring");
    }
    // Stay attached until the consumer has taken every packet over.
    ring.fini(T).expect("producer: ring drained");
    0
}

fn consumer(pool_name: &str, ring_name: &str, expected: u64, mut report: std::fs::File) -> i32 {
    let pool = Pool::open(pool_name).expect("consumer: open pool");
    let ring = Ring::open(ring_name).expect("consumer: open ring");
    let (mut packets, mut bytes, mut bad) = (0u64, 0u64, 0u64);
    let mut batch = [Handle::from_raw(0); 64];
    while packets + bad < expected {
        let n = match ring.read_batch(&mut batch) {
            Ok(0) => match ring.read_timeout(T) {
                Ok(h) => {
                    batch[0] = h;
                    1
                }
                Err(e) => {
                    eprintln!("consumer: {e}");
                    break;
                }
            },
            Ok(n) => n,
            Err(e) => {
                eprintln!("consumer: {e}");
                break;
            }
        };
        for &h in &batch[..n] {
            let mut p = match pool.get(h) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("consumer: {e}");
                    bad += 1;
                    continue;
                }
            };
            let Some(data_len) = p.len().checked_sub(8) else {
                bad += 1;
                continue;
            };
            let want = u64::from_le_bytes(p[data_len..].try_into().unwrap());
            p.truncate(data_len).unwrap();
            if checksum(&p) != want {
                bad += 1;
            }
            packets += 1;
            bytes += data_len as u64;
        }
    }
    writeln!(report, "{packets} {bytes} {bad}").unwrap();
    0
}

fn main() {
    let mut packets = 1_000_000u64;
    let mut producers = 2u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match a.as_str() {
            "--packets" => packets = value(),
            "--producers" => producers = value(),
            _ => usage(),
        }
    }
    if producers == 0 {
        usage();
    }
    let pool_name = format!("/ssm-pipeline-{}.pool", std::process::id());
    let ring_name = format!("/ssm-pipeline-{}.ring", std::process::id());
    let cfg = PoolConfig::new()
        .class(512, 4096)
        .class(2048, 2048)
        .class(16 << 10, 1024)
        .headspace(128)
        .tailspace(32)
        .max_processes(16);
    let fail = |e: ssm::Error| -> ! {
        eprintln!("{e}");
        exit(2)
    };
    let pool = Pool::create(&pool_name, &cfg).unwrap_or_else(|e| fail(e));
    let ring =
        Ring::create(&ring_name, &RingConfig::new().capacity(4096)).unwrap_or_else(|e| fail(e));
    let (report_rx, report_tx) = pipe();
    let sent = packets / producers * producers;
    let start = Instant::now();
    let mut children = Vec::new();
    match fork() {
        0 => exit(consumer(&pool_name, &ring_name, sent, report_tx)),
        pid => children.push(pid),
    }
    drop(report_tx);
    for id in 0..producers {
        match fork() {
            0 => exit(producer(&pool_name, &ring_name, id, packets / producers)),
            pid => children.push(pid),
        }
    }
    let mut failed = false;
    for pid in children {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        failed |= !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
    let elapsed = start.elapsed();
    let mut text = String::new();
    std::io::BufReader::new(report_rx)
        .read_to_string(&mut text)
        .unwrap();
    let nums: Vec<u64> = text
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    let (got, bytes, bad) = match nums[..] {
        [a, b, c] => (a, b, c),
        _ => (0, 0, u64::MAX),
    };
    let secs = elapsed.as_secs_f64();
    println!(
        "{got} packets ({:.1} MB) in {secs:.3} s: {:.2} M packets/s, {:.2} GB/s; {producers} producer process(es), 1 consumer process, one ring",
        bytes as f64 / 1e6,
        got as f64 / secs / 1e6,
        bytes as f64 / secs / 1e9
    );
    let reclaimed = pool.reclaim_dead().unwrap_or_else(|e| fail(e));
    let stats = pool.stats();
    print!("{stats}");
    let audit = pool.audit();
    let leaked = stats.allocated();
    let queued = ring.queued();
    let _ = pool.destroy();
    let _ = ring.destroy();
    let ok = !failed && bad == 0 && got == sent && leaked == 0 && queued == 0 && audit.is_ok();
    println!(
        "checksum errors={bad} lost={} leaked={leaked} left in ring={queued} reclaimed={} audit={}",
        sent.saturating_sub(got),
        reclaimed.blocks(),
        if audit.is_ok() { "ok" } else { "FAILED" }
    );
    if !ok {
        if let Err(e) = audit {
            eprintln!("{e}");
        }
        exit(1);
    }
}

fn usage() -> ! {
    eprintln!("usage: pipeline [--packets N] [--producers K]");
    exit(2)
}
