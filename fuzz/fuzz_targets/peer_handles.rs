//! Arbitrary 64-bit handles from a peer: `get`, `release` and `retain`
//! must refuse everything that does not name a live allocation, and never
//! hand one block to two holders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssm::{Handle, Pool, PoolConfig};

fuzz_target!(|data: &[u8]| {
    let cfg = PoolConfig::new()
        .class(256, 8)
        .class(1024, 4)
        .shards(2)
        .headspace(0)
        .tailspace(0)
        .cache_size(2);
    let pool = Pool::private(&cfg).unwrap();
    // Live allocations: some held by guards, some sent as handles.
    let guards: Vec<_> = (0..3).filter_map(|_| pool.alloc(10).ok()).collect();
    let sent: Vec<Handle> = (0..3)
        .filter_map(|_| pool.alloc(500).ok())
        .map(|p| p.into_handle())
        .collect();
    let mut taken = Vec::new();
    for chunk in data.chunks_exact(9) {
        let raw = u64::from_le_bytes(chunk[1..9].try_into().unwrap());
        // Half the time, a handle near a real one (same index, nearby
        // generation) rather than noise.
        let h = if chunk[0] & 1 == 0 {
            let real = sent.get(chunk[0] as usize % sent.len().max(1)).copied();
            real.map_or(Handle::from_raw(raw), |r| {
                Handle::new(r.index(), r.generation().wrapping_add(raw as u32 % 3))
            })
        } else {
            Handle::from_raw(raw)
        };
        match chunk[0] % 3 {
            0 => {
                if let Ok(p) = pool.get(h) {
                    assert!(
                        guards
                            .iter()
                            .all(|g| g.handle().index() != p.handle().index()),
                        "a guarded block was handed out again"
                    );
                    assert!(
                        taken
                            .iter()
                            .all(|t: &ssm::PacketBuf<'_>| t.handle().index() != p.handle().index()),
                        "one block held by two guards"
                    );
                    taken.push(p);
                }
            }
            1 => {
                let _ = pool.release(h);
            }
            _ => {
                let _ = pool.retain(h);
            }
        }
    }
    drop(taken);
    drop(guards);
    pool.audit().expect("the pool stays consistent");
});
