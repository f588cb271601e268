//! A hostile process scribbles over a ring's header, indices, wake words,
//! writer registry and slots; every ring operation of a well-behaved
//! process must then return `Ok` or `Err`: no panic, no out-of-bounds
//! access, no hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssm::{Access, Handle, Ring, RingConfig};

fuzz_target!(|data: &[u8]| {
    let name = format!("/ssm-fuzz-ring-{}", std::process::id());
    let _ = Ring::unlink(&name);
    let ring = Ring::create(&name, &RingConfig::new().capacity(16).max_writers(4)).unwrap();
    // Honest traffic first.
    for i in 0..5 {
        ring.write(Handle::from_raw(i)).unwrap();
    }
    let _ = ring.read();

    let (base, len) = ring.raw_segment();
    // Input: repeated [offset lo, offset hi, count, bytes...].
    let mut rest = data;
    while rest.len() >= 3 {
        let off = u16::from_le_bytes([rest[0], rest[1]]) as usize % len;
        let n = (rest[2] as usize).min(rest.len() - 3).min(32);
        for (i, &b) in rest[3..3 + n].iter().enumerate() {
            if off + i < len {
                // SAFETY: inside the mapping; a byte-sized volatile write,
                // as another process would.
                unsafe { std::ptr::write_volatile(base.add(off + i), b) };
            }
        }
        rest = &rest[3 + n..];
    }

    let _ = ring.queued();
    let _ = ring.access();
    for i in 0..20 {
        let _ = ring.write(Handle::from_raw(100 + i));
        let _ = ring.read();
    }
    let mut out = [Handle::from_raw(0); 8];
    let _ = ring.read_batch(&mut out);
    let _ = ring.read_timeout(Some(std::time::Duration::from_millis(1)));
    let _ = ring.write_timeout(
        Handle::from_raw(1),
        Some(std::time::Duration::from_millis(1)),
    );
    let _ = ring.fini(Some(std::time::Duration::from_millis(1)));
    let _ = ring.set_access(Access::FlowDown);
    let _ = ring.read();
    let _ = Ring::open(&name).map(|r| r.write(Handle::from_raw(5)));
    drop(ring);
    let _ = Ring::unlink(&name);
});
