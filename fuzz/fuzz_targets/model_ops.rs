//! Operation sequences on a pool, checked step by step against the
//! reference model (several simulated processes, hand-offs, deaths and
//! sweeps).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssm::testing::model::{decode, Checker};
use ssm::PoolConfig;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let cfg = PoolConfig::new()
        .class(256, 12)
        .class(1024, 5)
        .shards(1 + u32::from(shape % 3))
        .cache_size(2 * u32::from((shape >> 2) % 3))
        .headspace(0)
        .tailspace(0)
        .max_processes(8);
    let mut checker = Checker::new(&cfg);
    if let Err(d) = checker.run(&decode(rest)) {
        panic!("the pool and the model disagree: {d}");
    }
    if let Err(e) = checker.finish() {
        panic!("at the end: {e}");
    }
});
