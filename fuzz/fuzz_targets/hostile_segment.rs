//! A hostile process scribbles over the shared structures of a pool (the
//! header, class table, wake words, free-list heads, registry, magazines
//! and metadata table); every operation of a well-behaved process must then
//! return `Ok` or `Err`: no panic, no out-of-bounds access (AddressSanitizer
//! watches), no hang (libFuzzer's timeout watches).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssm::{Handle, Pool, PoolConfig};

fuzz_target!(|data: &[u8]| {
    let cfg = PoolConfig::new()
        .class(256, 16)
        .class(1024, 8)
        .shards(2)
        .headspace(16)
        .tailspace(16)
        .cache_size(4)
        .max_processes(4);
    let pool = Pool::private(&cfg).unwrap();
    // A little honest traffic first, so the structures are not pristine.
    let held: Vec<_> = (0..5).filter_map(|i| pool.alloc(i * 100).ok()).collect();
    let handles: Vec<Handle> = held.into_iter().map(|p| p.into_handle()).collect();

    let regions = pool.raw_regions();
    let (base, len) = pool.raw_segment();
    // Input: repeated [region selector, offset lo, offset hi, count, bytes...].
    let mut rest = data;
    while rest.len() >= 4 {
        let (what, off, n) = (rest[0], u16::from_le_bytes([rest[1], rest[2]]), rest[3]);
        rest = &rest[4..];
        let (_, start, size) = regions[what as usize % regions.len()];
        let n = (n as usize).min(rest.len()).min(64);
        let at = start + off as usize % size.max(1);
        for (i, &b) in rest[..n].iter().enumerate() {
            if at + i < len {
                // SAFETY: inside the segment, which this process mapped;
                // a byte-sized volatile write, as another process would.
                unsafe { std::ptr::write_volatile(base.add(at + i), b) };
            }
        }
        rest = &rest[n..];
    }

    // Every operation of a well-behaved process: Ok or Err, nothing else.
    let _ = pool.revalidate();
    let _ = pool.stats();
    let _ = pool.audit();
    for len in [0, 100, 300, 1000] {
        if let Ok(mut p) = pool.alloc(len) {
            p.fill(0xA5);
            let _ = p.push_head(8);
            let _ = p.push_tail(8);
            let h = p.into_handle();
            if let Ok(q) = pool.get(h) {
                let _ = q.iter().map(|&b| b as u32).sum::<u32>();
            }
        }
    }
    for h in handles {
        let _ = pool.retain(h);
        let _ = pool.release(h);
        if let Ok(p) = pool.get(h) {
            let _ = p.len();
        }
    }
    let _ = pool.alloc_timeout(10, Some(std::time::Duration::from_millis(1)));
    let _ = pool.reclaim_dead();
    let _ = pool.flush();
    let _ = pool.stats();
    let _ = pool.audit();
});
