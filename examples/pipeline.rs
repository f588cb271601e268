//! A multi-process packet pipeline over one shared pool.
//!
//! Producer processes allocate packets of mixed sizes, fill them and stamp
//! a checksum into a trailer, and send the handles over a pipe; a consumer
//! process takes each packet, verifies it and frees it. At the end the
//! parent prints throughput and the pool's statistics, audits the pool, and
//! exits non-zero on any checksum mismatch, loss or leak.
//!
//! ```text
//! cargo run --release --example pipeline -- [--packets N] [--producers K]
//! ```

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::exit;
use std::time::{Duration, Instant};

use ssm::{Handle, Pool, PoolConfig};

const SIZES: [usize; 6] = [64, 200, 576, 1400, 4000, 9000];

fn checksum(data: &[u8]) -> u32 {
    // FNV-1a: cheap and order-sensitive.
    data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
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

fn producer(name: &str, id: u64, packets: u64, mut out: std::fs::File) -> i32 {
    let pool = Pool::open(name).expect("producer: open pool");
    let mut batch = Vec::with_capacity(64 * 8);
    for i in 0..packets {
        let len = SIZES[((i + id) % SIZES.len() as u64) as usize];
        let mut p = pool
            .alloc_timeout(len, Some(Duration::from_secs(30)))
            .expect("producer: allocate");
        let seed = (id << 40) ^ i;
        for (j, b) in p.iter_mut().enumerate() {
            *b = (seed as usize).wrapping_add(j * 7) as u8;
        }
        let sum = checksum(&p);
        p.push_tail(4)
            .expect("tailspace")
            .copy_from_slice(&sum.to_le_bytes());
        batch.extend_from_slice(&p.into_handle().into_raw().to_le_bytes());
        if batch.len() == batch.capacity() || i + 1 == packets {
            out.write_all(&batch).expect("producer: write pipe");
            batch.clear();
        }
    }
    // Stay attached until the consumer has taken the last packets over.
    drop(out);
    0
}

fn consumer(name: &str, mut input: std::fs::File, report: std::fs::File) -> i32 {
    let pool = Pool::open(name).expect("consumer: open pool");
    let (mut packets, mut bytes, mut bad) = (0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 8 * 512];
    let mut have = 0;
    loop {
        let n = input.read(&mut buf[have..]).expect("consumer: read pipe");
        if n == 0 {
            break;
        }
        have += n;
        let whole = have / 8 * 8;
        for chunk in buf[..whole].chunks_exact(8) {
            let h = Handle::from_raw(u64::from_le_bytes(chunk.try_into().unwrap()));
            let mut p = match pool.get(h) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("consumer: {e}");
                    bad += 1;
                    continue;
                }
            };
            let Some(data_len) = p.len().checked_sub(4) else {
                bad += 1;
                continue;
            };
            let want = u32::from_le_bytes(p[data_len..].try_into().unwrap());
            p.truncate(data_len).unwrap();
            if checksum(&p) != want {
                bad += 1;
            }
            packets += 1;
            bytes += data_len as u64;
        }
        buf.copy_within(whole..have, 0);
        have -= whole;
    }
    let mut report = report;
    writeln!(report, "{packets} {bytes} {bad}").unwrap();
    0
}

fn main() {
    let mut packets = 200_000u64;
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
    let name = format!("/ssm-pipeline-{}", std::process::id());
    let cfg = PoolConfig::new()
        .class(512, 4096)
        .class(2048, 2048)
        .class(16 << 10, 512)
        .headspace(128)
        .tailspace(32)
        .max_processes(16);
    let pool = Pool::create(&name, &cfg).unwrap_or_else(|e| {
        eprintln!("{e}");
        exit(2)
    });
    let (rx, tx) = pipe();
    let (report_rx, report_tx) = pipe();
    let start = Instant::now();
    let mut children = Vec::new();
    for id in 0..producers {
        let tx = tx.try_clone().unwrap();
        match fork() {
            0 => exit(producer(&name, id, packets / producers, tx)),
            pid => children.push(pid),
        }
    }
    drop(tx);
    match fork() {
        0 => exit(consumer(&name, rx, report_tx)),
        pid => children.push(pid),
    }
    drop(rx);
    drop(report_tx);
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
    let sent = packets / producers * producers;
    let secs = elapsed.as_secs_f64();
    println!(
        "{got} packets ({:.1} MB) in {secs:.3} s: {:.2} M packets/s, {:.2} GB/s, {producers} producer(s), 1 consumer",
        bytes as f64 / 1e6,
        got as f64 / secs / 1e6,
        bytes as f64 / secs / 1e9
    );
    let reclaimed = pool.reclaim_dead().expect("reclaim");
    let stats = pool.stats();
    print!("{stats}");
    let audit = pool.audit();
    let leaked = stats.allocated();
    let _ = pool.destroy();
    let ok = !failed && bad == 0 && got == sent && leaked == 0 && audit.is_ok();
    println!(
        "checksum errors={bad} lost={} leaked={leaked} reclaimed={} audit={}",
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
