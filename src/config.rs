//! Run-time configuration of a pool: size classes, shards, head- and
//! tailspace, the process registry, the per-process caches, permissions.

use crate::error::{Error, Result};

/// The most size classes a pool can have.
pub const MAX_CLASSES: usize = 16;
/// The most shards a class can have.
pub const MAX_SHARDS: u32 = 64;
/// The most blocks a pool can have: block indices are 22 bits in a free-list
/// head word, and the all-ones index marks the end of a list.
pub const MAX_BLOCKS: u32 = (1 << 22) - 1;
/// The most processes (attachments) a pool can register: slot numbers are
/// 10 bits in a free-list head word, and 0 there means "no pending
/// operation".
pub const MAX_PROCESSES: u32 = (1 << 10) - 1;
/// The largest per-process cache (magazine) of one class.
pub const MAX_CACHE: u32 = 128;
/// The largest block size.
pub const MAX_BLOCK_SIZE: u32 = 1 << 30;

/// One size class: blocks of `size` bytes, `count` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SizeClass {
    /// Bytes per block, headspace and tailspace included.
    pub size: u32,
    /// Number of blocks, spread over the class's shards.
    pub count: u32,
}

/// How to build a pool.
///
/// ```
/// use ssm::PoolConfig;
/// let cfg = PoolConfig::new()
///     .class(512, 1024)
///     .class(2048, 256)
///     .shards(4)
///     .headspace(64)
///     .tailspace(16);
/// assert!(cfg.validate().is_ok());
/// assert_eq!(cfg.max_payload(), 2048 - 64 - 16);
/// ```
///
/// The blocks of a class are spread over its shards, not multiplied: 768
/// blocks over 4 shards is 768 blocks in all. At creation every block sits
/// in shard 0 of its class; blocks migrate to other shards as processes
/// free them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    pub(crate) classes: Vec<SizeClass>,
    pub(crate) shards: u32,
    pub(crate) headspace: u32,
    pub(crate) tailspace: u32,
    pub(crate) max_processes: u32,
    pub(crate) cache_size: u32,
    pub(crate) mode: u32,
    pub(crate) owner: Option<(u32, u32)>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The block sizes of the C pool's nine classes.
const C_SIZES: [u32; 9] = [
    256,
    512,
    1 << 10,
    2 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
];

impl PoolConfig {
    /// An empty configuration: no classes yet, 4 shards per class, 256 bytes
    /// of headspace, 32 of tailspace, 64 processes, caches of up to 32
    /// blocks, mode 0600.
    pub fn new() -> Self {
        Self {
            classes: Vec::new(),
            shards: 4,
            headspace: 256,
            tailspace: 32,
            max_processes: 64,
            cache_size: 32,
            mode: 0o600,
            owner: None,
        }
    }

    /// The group pool of the C design ("GSPP"): its nine classes with 1024,
    /// 768, 512, 384, 256, 128, 64, 32 and 16 blocks, mode 0660.
    ///
    /// The headspace is 128 bytes, not the C pool's 256: with 256 bytes of
    /// headspace and 32 of tailspace a 256-byte block could not hold a
    /// single byte of payload.
    pub fn group_pool() -> Self {
        Self::preset(&[1024, 768, 512, 384, 256, 128, 64, 32, 16]).mode(0o660)
    }

    /// The per-user pool of the C design ("PUP"): 128, 96, 64, 48, 32, 16,
    /// 8, 2 and 0 blocks of the nine classes, mode 0600, headspace 128
    /// (see [`PoolConfig::group_pool`]).
    pub fn per_user_pool() -> Self {
        Self::preset(&[128, 96, 64, 48, 32, 16, 8, 2, 0]).mode(0o600)
    }

    fn preset(counts: &[u32; 9]) -> Self {
        let mut cfg = Self::new().headspace(128);
        for (size, count) in C_SIZES.iter().zip(counts) {
            cfg = cfg.class(*size, *count);
        }
        cfg
    }

    /// Adds a size class of `count` blocks of `size` bytes (headspace and
    /// tailspace included). Classes must be added in increasing size.
    pub fn class(mut self, size: u32, count: u32) -> Self {
        self.classes.push(SizeClass { size, count });
        self
    }

    /// Replaces the block count of the class of `size` bytes, or adds the
    /// class if there is none of that size.
    pub fn set_class(mut self, size: u32, count: u32) -> Self {
        match self.classes.iter_mut().find(|c| c.size == size) {
            Some(c) => c.count = count,
            None => {
                self.classes.push(SizeClass { size, count });
                self.classes.sort_by_key(|c| c.size);
            }
        }
        self
    }

    /// Shards per class (1 to 64; default 4).
    pub fn shards(mut self, n: u32) -> Self {
        self.shards = n;
        self
    }

    /// Bytes reserved in front of the data of a new packet, so that lower
    /// layers can prepend headers without copying (default 256).
    pub fn headspace(mut self, bytes: u32) -> Self {
        self.headspace = bytes;
        self
    }

    /// Bytes kept free behind the data of a new packet (default 32).
    pub fn tailspace(mut self, bytes: u32) -> Self {
        self.tailspace = bytes;
        self
    }

    /// How many handles ([`Pool`](crate::Pool) values) may be attached at
    /// once, over all processes (1 to 1023; default 64).
    pub fn max_processes(mut self, n: u32) -> Self {
        self.max_processes = n;
        self
    }

    /// The most blocks of one class a handle keeps in its private cache
    /// (0 to 128; default 32; 0 disables the caches). A class never caches
    /// more than a quarter of its blocks per handle.
    pub fn cache_size(mut self, n: u32) -> Self {
        self.cache_size = n;
        self
    }

    /// Permission bits of the shared memory object (default 0600).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Makes the pool a group pool: mode 0660.
    pub fn group(self) -> Self {
        self.mode(0o660)
    }

    /// Creates the object for another user and group (needs privilege).
    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.owner = Some((uid, gid));
        self
    }

    /// The size classes.
    pub fn classes(&self) -> &[SizeClass] {
        &self.classes
    }

    /// Shards per class.
    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// Headspace of a new packet.
    pub fn headspace_bytes(&self) -> u32 {
        self.headspace
    }

    /// Tailspace of a new packet.
    pub fn tailspace_bytes(&self) -> u32 {
        self.tailspace
    }

    /// Registry slots.
    pub fn process_slots(&self) -> u32 {
        self.max_processes
    }

    /// Largest per-handle cache of one class.
    pub fn cache_limit(&self) -> u32 {
        self.cache_size
    }

    /// Permission bits.
    pub fn permissions(&self) -> u32 {
        self.mode
    }

    /// The largest payload a packet can have: the largest class that has
    /// blocks, less headspace and tailspace (0 when no class has blocks).
    pub fn max_payload(&self) -> usize {
        self.classes
            .iter()
            .filter(|c| c.count > 0)
            .map(|c| c.size.saturating_sub(self.headspace + self.tailspace) as usize)
            .max()
            .unwrap_or(0)
    }

    /// Total number of blocks.
    pub fn total_blocks(&self) -> u64 {
        self.classes.iter().map(|c| u64::from(c.count)).sum()
    }

    /// Checks every rule; the error says which one is broken.
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(Error::InvalidConfig { detail });
        if self.classes.is_empty() {
            return bad("no size classes; add one with PoolConfig::class".into());
        }
        if self.classes.len() > MAX_CLASSES {
            return bad(format!(
                "{} size classes; at most {MAX_CLASSES} are supported",
                self.classes.len()
            ));
        }
        if self.total_blocks() == 0 {
            return bad("no blocks at all: every size class has a count of 0".into());
        }
        if self.total_blocks() > u64::from(MAX_BLOCKS) {
            return bad(format!(
                "{} blocks in all; the index encoding addresses at most {MAX_BLOCKS}",
                self.total_blocks()
            ));
        }
        let reserve = u64::from(self.headspace) + u64::from(self.tailspace);
        for (i, c) in self.classes.iter().enumerate() {
            if i > 0 && c.size <= self.classes[i - 1].size {
                return bad(format!(
                    "class sizes must increase: class {i} ({} B) follows {} B",
                    c.size,
                    self.classes[i - 1].size
                ));
            }
            if c.size > MAX_BLOCK_SIZE {
                return bad(format!(
                    "class {i}: {} B blocks; the largest supported is {MAX_BLOCK_SIZE} B",
                    c.size
                ));
            }
            if u64::from(c.size) <= reserve {
                return bad(format!(
                    "class {i}: a {} B block cannot hold a single payload byte after {} B of \
                     headspace and {} B of tailspace",
                    c.size, self.headspace, self.tailspace
                ));
            }
        }
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return bad(format!(
                "{} shards per class; choose 1 to {MAX_SHARDS}",
                self.shards
            ));
        }
        if self.max_processes == 0 || self.max_processes > MAX_PROCESSES {
            return bad(format!(
                "max_processes is {}; choose 1 to {MAX_PROCESSES}",
                self.max_processes
            ));
        }
        if self.cache_size > MAX_CACHE {
            return bad(format!(
                "cache_size is {}; choose 0 to {MAX_CACHE}",
                self.cache_size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(cfg: &PoolConfig) -> String {
        match cfg.validate() {
            Err(Error::InvalidConfig { detail }) => detail,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn presets_match_the_c_pool() {
        let g = PoolConfig::group_pool();
        g.validate().unwrap();
        let bytes: u64 = g
            .classes()
            .iter()
            .map(|c| u64::from(c.size) * u64::from(c.count))
            .sum();
        // 32.9 MiB of blocks, as UPSTREAM.md computes.
        assert_eq!(bytes, 34_471_936);
        assert_eq!(g.permissions(), 0o660);
        let p = PoolConfig::per_user_pool();
        p.validate().unwrap();
        assert_eq!(p.total_blocks(), 128 + 96 + 64 + 48 + 32 + 16 + 8 + 2);
        assert_eq!(p.permissions(), 0o600);
        // The 1 MiB class has no blocks, so 256 KiB is the largest.
        assert_eq!(p.max_payload(), (256 << 10) - 128 - 32);
    }

    #[test]
    fn rejects_each_broken_rule() {
        assert!(detail(&PoolConfig::new()).contains("no size classes"));
        assert!(detail(&PoolConfig::new().class(512, 0)).contains("no blocks"));
        assert!(detail(&PoolConfig::new().class(1024, 1).class(512, 1)).contains("increase"));
        assert!(detail(&PoolConfig::new().class(512, 1).class(512, 1)).contains("increase"));
        assert!(detail(&PoolConfig::new().class(288, 1)).contains("single payload byte"));
        assert!(detail(&PoolConfig::new().class(4096, MAX_BLOCKS + 1)).contains("index"));
        assert!(detail(&PoolConfig::new().class(512, 1).shards(0)).contains("shards"));
        assert!(detail(&PoolConfig::new().class(512, 1).shards(65)).contains("shards"));
        assert!(detail(&PoolConfig::new().class(512, 1).max_processes(0)).contains("max_processes"));
        assert!(
            detail(&PoolConfig::new().class(512, 1).max_processes(1024)).contains("max_processes")
        );
        assert!(detail(&PoolConfig::new().class(512, 1).cache_size(129)).contains("cache_size"));
        let many = (1..=17).fold(PoolConfig::new(), |c, i| c.class(512 * i, 1));
        assert!(detail(&many).contains("at most"));
        assert!(PoolConfig::new().class(289, 1).validate().is_ok());
    }

    #[test]
    fn set_class_replaces_or_inserts() {
        let c = PoolConfig::new().class(512, 1).class(2048, 1);
        let c = c.set_class(512, 9).set_class(1024, 3);
        assert_eq!(
            c.classes(),
            &[
                SizeClass {
                    size: 512,
                    count: 9
                },
                SizeClass {
                    size: 1024,
                    count: 3
                },
                SizeClass {
                    size: 2048,
                    count: 1
                }
            ]
        );
    }
}
