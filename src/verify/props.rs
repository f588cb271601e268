//! Property tests: operation sequences against the reference model, packet
//! windows against arithmetic, configuration validation against its rules,
//! and the round trips of every packed word.

use proptest::prelude::*;

use crate::block::{BlockState, Owner, Window};
use crate::config::{PoolConfig, MAX_BLOCKS, MAX_CACHE, MAX_PROCESSES, MAX_SHARDS};
use crate::error::Error;
use crate::freelist::Head;
use crate::handle::Handle;
use crate::layout::Geometry;
use crate::platform::Packed;
use crate::pool::Pool;
use crate::registry::SlotWord;
use crate::testing::model::{Checker, Op};

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Attach),
        6 => (any::<u8>(), any::<u8>()).prop_map(|(p, class)| Op::Alloc { p, class }),
        4 => (any::<u8>(), any::<u8>()).prop_map(|(p, i)| Op::Free { p, i }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(p, i)| Op::Send { p, i }),
        2 => any::<u8>().prop_map(|p| Op::Take { p }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(p, i)| Op::Retain { p, i }),
        1 => any::<u8>().prop_map(|p| Op::Release { p }),
        1 => (any::<u8>(), any::<u64>()).prop_map(|(p, raw)| Op::Forge { p, raw }),
        1 => any::<u8>().prop_map(|p| Op::Flush { p }),
        1 => any::<u8>().prop_map(|p| Op::Kill { p }),
        1 => any::<u8>().prop_map(|p| Op::Reclaim { p }),
    ]
}

fn pool_config() -> impl Strategy<Value = PoolConfig> {
    (1u32..4, 0u32..3, prop::bool::ANY).prop_map(|(shards, cache, two)| {
        let cfg = PoolConfig::new()
            .class(256, 12)
            .shards(shards)
            .headspace(0)
            .tailspace(0)
            .cache_size(cache * 2)
            .max_processes(8);
        if two {
            cfg.class(1024, 5)
        } else {
            cfg
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn operation_sequences_agree_with_the_model(
        cfg in pool_config(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut ops = ops;
        ops.insert(0, Op::Attach);
        let mut c = Checker::new(&cfg);
        if let Err(d) = c.run(&ops) {
            return Err(TestCaseError::fail(d.to_string()));
        }
        c.finish().map_err(TestCaseError::fail)?;
    }

    #[test]
    fn packet_windows_follow_their_arithmetic(
        ops in prop::collection::vec((0u8..5, 0usize..600), 1..60),
        len in 0usize..300,
    ) {
        let pool = Pool::private(&PoolConfig::new().class(512, 2).headspace(64).tailspace(32)).unwrap();
        let mut p = pool.alloc(len).unwrap();
        let (mut head, mut tail) = (64usize, 64 + len);
        for (kind, n) in ops {
            let r = match kind {
                0 => p.push_head(n).map(|_| ()),
                1 => p.push_tail(n).map(|_| ()),
                2 => p.pull_head(n),
                3 => p.pull_tail(n),
                _ => p.truncate(n),
            };
            let ok = match kind {
                0 => n <= head,
                1 => n <= 512 - tail,
                2 | 3 => n <= tail - head,
                _ => n <= tail - head,
            };
            prop_assert_eq!(r.is_ok(), ok, "op {} n {} window {}..{}", kind, n, head, tail);
            if let Err(e) = r {
                prop_assert!(matches!(e, Error::NoRoom { .. }), "not NoRoom: {}", e);
                continue;
            }
            match kind {
                0 => head -= n,
                1 => tail += n,
                2 => head += n,
                3 => tail -= n,
                _ => tail = head + n,
            }
            prop_assert_eq!((p.headroom(), p.len(), p.tailroom()), (head, tail - head, 512 - tail));
        }
        // The window travels with the handle.
        let h = p.into_handle();
        let q = pool.get(h).unwrap();
        prop_assert_eq!((q.headroom(), q.len()), (head, tail - head));
    }

    #[test]
    fn configurations_are_valid_exactly_when_the_rules_hold(
        sizes in prop::collection::vec((1u32..20_000, 0u32..300), 0..6),
        shards in 0u32..70,
        procs in 0u32..1100,
        cache in 0u32..140,
        headspace in 0u32..600,
        tailspace in 0u32..200,
    ) {
        let mut cfg = PoolConfig::new()
            .shards(shards)
            .max_processes(procs)
            .cache_size(cache)
            .headspace(headspace)
            .tailspace(tailspace);
        for &(s, c) in &sizes {
            cfg = cfg.class(s, c);
        }
        let total: u64 = sizes.iter().map(|&(_, c)| u64::from(c)).sum();
        let valid = !sizes.is_empty()
            && total > 0
            && total <= u64::from(MAX_BLOCKS)
            && sizes.windows(2).all(|w| w[0].0 < w[1].0)
            && sizes.iter().all(|&(s, _)| s > headspace + tailspace)
            && (1..=MAX_SHARDS).contains(&shards)
            && (1..=MAX_PROCESSES).contains(&procs)
            && cache <= MAX_CACHE;
        prop_assert_eq!(cfg.validate().is_ok(), valid, "{:?}", cfg.validate());
        if let Ok(g) = Geometry::new(&cfg) {
            // Regions in order, aligned, inside the segment.
            prop_assert!(g.off_class_hot >= g.off_classes);
            prop_assert!(g.off_shards > g.off_class_hot || g.classes.is_empty());
            prop_assert!(g.off_metas >= g.off_mags && g.off_payload >= g.off_metas);
            prop_assert_eq!(g.off_metas % 64, 0);
            let mut end = g.off_payload;
            for c in &g.classes {
                prop_assert!(c.payload_off >= end);
                prop_assert_eq!(c.payload_off % 4096, 0);
                prop_assert!(c.stride >= u64::from(c.size));
                end = c.payload_off + c.stride * u64::from(c.count);
            }
            prop_assert!(end <= g.total_size);
            prop_assert_eq!(g.config(), cfg.clone().mode(0o600));
        }
    }

    #[test]
    fn packed_words_round_trip(
        index in 0u32.., gen in 0u32.., slot in 0u32..1023, slot_gen in 0u16..4096,
        refs in 0u32..1024, guard in prop::bool::ANY, tag in 0u32.., pid in 0u32..,
        head in 0u32.., tail in 0u32..,
    ) {
        let h = Handle::new(index, gen);
        prop_assert_eq!((h.index(), h.generation()), (index, gen));
        prop_assert_eq!(Handle::from_raw(h.into_raw()), h);
        let owner = Owner { slot, gen: slot_gen };
        let g = gen & crate::block::GEN_MAX;
        let st = BlockState::owned(owner, g).with_refs(refs, guard);
        prop_assert_eq!((st.owner(), st.gen(), st.refs(), st.guard()), (Some(owner), g, refs, guard));
        prop_assert_eq!(BlockState::from_bits(st.to_bits()), st);
        let hd = Head::new(index & 0x3F_FFFF, slot + 1, tag);
        prop_assert_eq!((hd.index(), hd.pending(), hd.tag()), (index & 0x3F_FFFF, Some(slot), tag));
        let w = SlotWord::new(2, slot_gen, pid);
        prop_assert_eq!((w.state(), w.gen(), w.pid()), (2, slot_gen, pid));
        let win = Window { head, tail };
        prop_assert_eq!(Window::from_bits(win.to_bits()), win);
    }
}
