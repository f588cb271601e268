//! The commands. Each returns the text for stdout (a table or a JSON
//! document) or the reason it failed.

use ssm::inspect::{self, Kind, ObjectInfo, PoolView, RingInfo, RingParty};
use ssm::stats::human_size;
use ssm::{AuditReport, Error, Pool, PoolConfig, ReclaimReport, Ring, Stats};

use crate::fail::Failure;
use crate::json::{Json, Obj};
use crate::table::{bytes, Align, Table};
use crate::Preset;

type Out = Result<String, Failure>;

fn mode(m: u32) -> String {
    format!("{m:04o}")
}

fn owner(o: &ObjectInfo) -> String {
    format!("{}:{}", o.uid, o.gid)
}

fn yes_no(b: bool) -> String {
    (if b { "yes" } else { "no" }).to_string()
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn object_json(o: &ObjectInfo) -> Obj {
    Obj::new()
        .field("name", o.name.as_str())
        .field("kind", o.kind.to_string())
        .field("size", o.size)
        .field("uid", o.uid)
        .field("gid", o.gid)
        .field("mode", mode(o.mode))
}

fn party_json(p: &RingParty) -> Json {
    Obj::new()
        .field("pid", p.pid)
        .field("alive", p.alive)
        .into()
}

fn party_text(p: &RingParty) -> String {
    format!("{} ({})", p.pid, if p.alive { "alive" } else { "dead" })
}

fn ring_parties(r: &RingInfo) -> (u64, u64) {
    let all = r.reader.iter().chain(&r.writers);
    let n = all.clone().count() as u64;
    (n, all.filter(|p| p.alive).count() as u64)
}

/// The object `name`, which must be a pool for `command`.
fn need_pool(name: &str, command: &'static str) -> Result<ObjectInfo, Failure> {
    let info = inspect::identify(name)?;
    match info.kind {
        Kind::Pool => Ok(info),
        Kind::Ring => Err(Failure::WrongKind {
            name: info.name,
            kind: Kind::Ring,
            command,
        }),
        Kind::Foreign => Err(foreign(info)),
    }
}

fn foreign(info: ObjectInfo) -> Failure {
    Failure::Foreign {
        name: info.name,
        size: info.size,
        hint: "",
    }
}

// ---------------------------------------------------------------- list

/// One line of `ssm list`.
struct Entry {
    info: ObjectInfo,
    processes: Option<u64>,
    alive: Option<u64>,
    ring: Option<RingInfo>,
    error: Option<Failure>,
}

pub fn list(all: bool, json: bool) -> Out {
    let mut entries = Vec::new();
    let mut skipped = 0u64;
    for info in inspect::list()? {
        let mut e = Entry {
            info,
            processes: None,
            alive: None,
            ring: None,
            error: None,
        };
        match e.info.kind {
            Kind::Foreign if !all => {
                skipped += 1;
                continue;
            }
            Kind::Foreign => {}
            Kind::Pool => match PoolView::open(&e.info.name) {
                Ok(v) => {
                    let st = v.stats();
                    e.processes = Some(st.processes.len() as u64);
                    e.alive = Some(st.processes.iter().filter(|p| p.alive).count() as u64);
                }
                Err(err) => e.error = Some(err.into()),
            },
            Kind::Ring => match inspect::ring(&e.info.name) {
                Ok(r) => {
                    let (n, alive) = ring_parties(&r);
                    e.processes = Some(n);
                    e.alive = Some(alive);
                    e.ring = Some(r);
                }
                Err(err) => e.error = Some(err.into()),
            },
        }
        entries.push(e);
    }
    if json {
        let objects: Vec<Json> = entries
            .iter()
            .map(|e| {
                object_json(&e.info)
                    .field("processes", e.processes)
                    .field("alive", e.alive)
                    .field(
                        "reader",
                        e.ring
                            .as_ref()
                            .and_then(|r| r.reader.as_ref())
                            .map(party_json),
                    )
                    .field(
                        "writers",
                        e.ring
                            .as_ref()
                            .map(|r| r.writers.iter().map(party_json).collect::<Vec<_>>()),
                    )
                    .field("error", e.error.as_ref().map(Failure::message))
                    .into()
            })
            .collect();
        let doc: Json = Obj::new()
            .field("objects", objects)
            .field("foreign_skipped", skipped)
            .into();
        return Ok(doc.render());
    }
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("no pools or rings in /dev/shm\n");
    } else {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("KIND", Align::Left),
            ("SIZE", Align::Right),
            ("OWNER", Align::Left),
            ("MODE", Align::Left),
            ("PROCESSES", Align::Left),
        ]);
        for e in &entries {
            let procs = match (&e.error, &e.ring, e.processes, e.alive) {
                (Some(f), ..) => format!("unreadable ({})", f.kind().replace('_', " ")),
                (None, Some(r), ..) => {
                    let reader = r.reader.as_ref().map_or("no reader".to_string(), |p| {
                        format!("reader {}", party_text(p))
                    });
                    let alive = r.writers.iter().filter(|p| p.alive).count() as u64;
                    format!(
                        "{reader}, {} ({alive} alive)",
                        plural(r.writers.len() as u64, "writer", "writers")
                    )
                }
                (None, None, Some(0), _) => "none".to_string(),
                (None, None, Some(n), Some(a)) => format!("{n} ({a} alive)"),
                _ => "-".to_string(),
            };
            t.row(vec![
                e.info.name.clone(),
                e.info.kind.to_string(),
                bytes(e.info.size),
                owner(&e.info),
                mode(e.info.mode),
                procs,
            ]);
        }
        out.push_str(&t.render());
        for e in &entries {
            if let Some(f) = &e.error {
                out.push_str(&format!("{}: {}\n", e.info.name, f.message()));
            }
        }
    }
    if skipped > 0 {
        out.push_str(&format!(
            "({} in /dev/shm skipped: not of this library; --all lists them)\n",
            plural(skipped, "other object", "other objects")
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------- stat

pub fn stat(name: &str, json: bool) -> Out {
    let info = inspect::identify(name)?;
    match info.kind {
        Kind::Pool => {
            let view = PoolView::open(&info.name)?;
            let stats = view.stats();
            Ok(if json {
                pool_stat_json(&view, &stats).render()
            } else {
                pool_stat_text(&view, &stats)
            })
        }
        Kind::Ring => {
            let r = inspect::ring(&info.name)?;
            Ok(if json {
                ring_stat_json(&r).render()
            } else {
                ring_stat_text(&r)
            })
        }
        Kind::Foreign => Err(foreign(info)),
    }
}

fn pool_stat_json(view: &PoolView, st: &Stats) -> Json {
    let cfg = view.config();
    let (creator, creator_alive) = view.creator();
    let classes: Vec<Json> = st
        .classes
        .iter()
        .map(|c| {
            Obj::new()
                .field("size", c.size)
                .field("max_payload", c.max_payload)
                .field("blocks", c.blocks)
                .field("free", c.free())
                .field("free_per_shard", c.free_per_shard.clone())
                .field("cached", c.cached)
                .field("allocated", c.allocated)
                .field("moving", c.moving)
                .field("waiters", c.waiters)
                .into()
        })
        .collect();
    let processes: Vec<Json> = st
        .processes
        .iter()
        .map(|p| {
            Obj::new()
                .field("slot", p.slot)
                .field("pid", p.pid)
                .field("state", p.state.to_string())
                .field("alive", p.alive)
                .field("held", p.allocated + p.cached)
                .field("allocated", p.allocated)
                .field("cached", p.cached)
                .into()
        })
        .collect();
    object_json(view.info())
        .field(
            "creator",
            Obj::new()
                .field("pid", creator)
                .field("alive", creator_alive),
        )
        .field(
            "config",
            Obj::new()
                .field("shards", cfg.shard_count())
                .field("headspace", cfg.headspace_bytes())
                .field("tailspace", cfg.tailspace_bytes())
                .field("max_processes", cfg.process_slots())
                .field("cache_size", cfg.cache_limit()),
        )
        .field("classes", classes)
        .field(
            "totals",
            Obj::new()
                .field("blocks", st.blocks())
                .field("free", st.free())
                .field("cached", st.cached())
                .field("allocated", st.allocated()),
        )
        .field("processes", processes)
        .field("held_by_dead", st.held_by_dead)
        .field("pending_operations", st.pending_operations)
        .into()
}

fn pool_stat_text(view: &PoolView, st: &Stats) -> String {
    let info = view.info();
    let cfg = view.config();
    let (creator, creator_alive) = view.creator();
    let mut out = format!(
        "pool {}\n  size {}, mode {}, owner {}, created by pid {} ({})\n  \
         {} per class, headspace {}, tailspace {}, {}, caches of up to {}\n\n",
        info.name,
        bytes(info.size),
        mode(info.mode),
        owner(info),
        creator,
        if creator_alive { "running" } else { "exited" },
        plural(cfg.shard_count().into(), "shard", "shards"),
        human_size(cfg.headspace_bytes()),
        human_size(cfg.tailspace_bytes()),
        plural(cfg.process_slots().into(), "process slot", "process slots"),
        plural(cfg.cache_limit().into(), "block", "blocks"),
    );
    let mut t = Table::new(&[
        ("CLASS", Align::Right),
        ("PAYLOAD", Align::Right),
        ("BLOCKS", Align::Right),
        ("FREE", Align::Right),
        ("CACHED", Align::Right),
        ("ALLOCATED", Align::Right),
        ("MOVING", Align::Right),
        ("WAITERS", Align::Right),
        ("FREE PER SHARD", Align::Left),
    ]);
    for c in &st.classes {
        let shards: Vec<String> = c.free_per_shard.iter().map(u64::to_string).collect();
        t.row(vec![
            human_size(c.size),
            human_size(c.max_payload),
            c.blocks.to_string(),
            c.free().to_string(),
            c.cached.to_string(),
            c.allocated.to_string(),
            c.moving.to_string(),
            c.waiters.to_string(),
            shards.join(" "),
        ]);
    }
    t.row(vec![
        "total".into(),
        String::new(),
        st.blocks().to_string(),
        st.free().to_string(),
        st.cached().to_string(),
        st.allocated().to_string(),
        st.classes.iter().map(|c| c.moving).sum::<u64>().to_string(),
        st.classes
            .iter()
            .map(|c| c.waiters)
            .sum::<u32>()
            .to_string(),
    ]);
    out.push_str(&t.render());
    out.push('\n');
    if st.processes.is_empty() {
        out.push_str("no attached processes\n");
    } else {
        let mut t = Table::new(&[
            ("SLOT", Align::Right),
            ("PID", Align::Right),
            ("STATE", Align::Left),
            ("ALIVE", Align::Left),
            ("HELD", Align::Right),
            ("ALLOCATED", Align::Right),
            ("CACHED", Align::Right),
        ]);
        for p in &st.processes {
            t.row(vec![
                p.slot.to_string(),
                p.pid.to_string(),
                p.state.to_string(),
                yes_no(p.alive),
                (p.allocated + p.cached).to_string(),
                p.allocated.to_string(),
                p.cached.to_string(),
            ]);
        }
        out.push_str(&t.render());
    }
    out.push('\n');
    out.push_str(&format!(
        "blocks pending recovery:      {}",
        st.held_by_dead
    ));
    if st.held_by_dead > 0 {
        out.push_str(&format!(
            " (held by dead processes; `ssm reclaim {}` recovers them)",
            info.name
        ));
    }
    out.push_str(&format!(
        "\npending free-list operations: {}\n",
        st.pending_operations
    ));
    out
}

fn access_text(r: &RingInfo) -> String {
    r.access
        .map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

fn ring_stat_json(r: &RingInfo) -> Json {
    object_json(&r.object)
        .field("capacity", r.capacity)
        .field("queued", r.queued)
        .field("access", access_text(r))
        .field("reader", r.reader.as_ref().map(party_json))
        .field(
            "writers",
            r.writers.iter().map(party_json).collect::<Vec<_>>(),
        )
        .into()
}

fn ring_stat_text(r: &RingInfo) -> String {
    let o = &r.object;
    let mut out = format!(
        "ring {}\n  size {}, mode {}, owner {}\n  capacity {}, queued {}, access {}\n\n",
        o.name,
        bytes(o.size),
        mode(o.mode),
        owner(o),
        r.capacity,
        r.queued,
        access_text(r),
    );
    if r.reader.is_none() && r.writers.is_empty() {
        out.push_str("no reader or writers registered\n");
        return out;
    }
    let mut t = Table::new(&[
        ("ROLE", Align::Left),
        ("PID", Align::Right),
        ("ALIVE", Align::Left),
    ]);
    for (role, p) in r
        .reader
        .iter()
        .map(|p| ("reader", p))
        .chain(r.writers.iter().map(|p| ("writer", p)))
    {
        t.row(vec![role.into(), p.pid.to_string(), yes_no(p.alive)]);
    }
    if r.reader.is_none() {
        t.row(vec!["reader".into(), "-".into(), "-".into()]);
    }
    out.push_str(&t.render());
    out
}

// ---------------------------------------------------------------- audit

pub fn audit(name: &str, json: bool) -> Out {
    let info = need_pool(name, "audit")?;
    let view = PoolView::open(&info.name)?;
    match view.audit() {
        Ok(r) => Ok(if json {
            audit_json(&info.name, &r).render()
        } else {
            audit_text(&info.name, &r)
        }),
        Err(Error::Corrupted { name, detail }) => Err(Failure::Inconsistent { name, detail }),
        Err(e) => Err(e.into()),
    }
}

fn audit_json(name: &str, r: &AuditReport) -> Json {
    let classes: Vec<Json> = r
        .classes
        .iter()
        .map(|c| {
            Obj::new()
                .field("size", c.size)
                .field("blocks", c.blocks)
                .field("free", c.free())
                .field("free_per_shard", c.free_per_shard.clone())
                .field("cached", c.cached)
                .field("allocated", c.allocated)
                .field("pushing", c.pushing)
                .field("pending", c.pending)
                .into()
        })
        .collect();
    Obj::new()
        .field("name", name)
        .field("consistent", true)
        .field("blocks", r.blocks())
        .field("free", r.free())
        .field("cached", r.cached())
        .field("allocated", r.allocated())
        .field("pending_operations", r.pending_operations)
        .field("classes", classes)
        .into()
}

fn audit_text(name: &str, r: &AuditReport) -> String {
    let pushing: u64 = r.classes.iter().map(|c| c.pushing).sum();
    let pending: u64 = r.classes.iter().map(|c| c.pending).sum();
    let mut out = format!(
        "pool {name} is consistent: each of its {} blocks is in exactly one place\n  \
         {} free, {} cached, {} allocated, {} moving",
        r.blocks(),
        r.free(),
        r.cached(),
        r.allocated(),
        pushing,
    );
    if r.pending_operations > 0 {
        out.push_str(&format!(
            ", {pending} in {}",
            plural(
                r.pending_operations.into(),
                "pending operation",
                "pending operations"
            )
        ));
    }
    out.push_str("\n\n");
    let mut t = Table::new(&[
        ("CLASS", Align::Right),
        ("BLOCKS", Align::Right),
        ("FREE", Align::Right),
        ("CACHED", Align::Right),
        ("ALLOCATED", Align::Right),
        ("MOVING", Align::Right),
        ("PENDING", Align::Right),
        ("FREE PER SHARD", Align::Left),
    ]);
    for c in &r.classes {
        let shards: Vec<String> = c.free_per_shard.iter().map(u64::to_string).collect();
        t.row(vec![
            human_size(c.size),
            c.blocks.to_string(),
            c.free().to_string(),
            c.cached.to_string(),
            c.allocated.to_string(),
            c.pushing.to_string(),
            c.pending.to_string(),
            shards.join(" "),
        ]);
    }
    out.push_str(&t.render());
    out
}

// ---------------------------------------------------------------- reclaim

pub fn reclaim(name: &str, json: bool) -> Out {
    let info = need_pool(name, "reclaim")?;
    let pool = Pool::open(&info.name)?;
    let report = pool.reclaim_dead()?;
    let sizes: Vec<u32> = pool.config().classes().iter().map(|c| c.size).collect();
    drop(pool);
    Ok(if json {
        reclaim_json(&info.name, &report, &sizes).render()
    } else {
        reclaim_text(&info.name, &report, &sizes)
    })
}

fn reclaim_json(name: &str, r: &ReclaimReport, sizes: &[u32]) -> Json {
    let processes: Vec<Json> = r
        .processes
        .iter()
        .map(|p| {
            Obj::new()
                .field("pid", p.pid)
                .field("slot", p.slot)
                .field("blocks", p.blocks)
                .into()
        })
        .collect();
    let per_class: Vec<Json> = r
        .blocks_per_class
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            Obj::new()
                .field("size", sizes.get(i).copied())
                .field("blocks", n)
                .into()
        })
        .collect();
    Obj::new()
        .field("name", name)
        .field("processes", processes)
        .field("blocks", r.blocks())
        .field("blocks_per_class", per_class)
        .field("orphans", r.orphans)
        .field("operations_completed", r.operations_completed)
        .into()
}

fn reclaim_text(name: &str, r: &ReclaimReport, sizes: &[u32]) -> String {
    if r.is_empty() && r.orphans == 0 {
        return format!("reclaim {name}: nothing to recover\n");
    }
    let mut out = format!(
        "reclaim {name}: recovered {}, {}",
        plural(r.processes.len() as u64, "process", "processes"),
        plural(r.blocks(), "block", "blocks"),
    );
    if r.orphans > 0 {
        out.push_str(&format!(" ({} orphaned)", r.orphans));
    }
    if r.operations_completed > 0 {
        out.push_str(&format!(
            ", completed {}",
            plural(
                r.operations_completed.into(),
                "pending operation",
                "pending operations"
            )
        ));
    }
    out.push_str("\n\n");
    if !r.processes.is_empty() {
        let mut t = Table::new(&[
            ("PID", Align::Right),
            ("SLOT", Align::Right),
            ("BLOCKS", Align::Right),
        ]);
        for p in &r.processes {
            t.row(vec![
                p.pid.to_string(),
                p.slot.to_string(),
                p.blocks.to_string(),
            ]);
        }
        out.push_str(&t.render());
        out.push('\n');
    }
    let mut t = Table::new(&[("CLASS", Align::Right), ("RECOVERED", Align::Right)]);
    for (i, &n) in r.blocks_per_class.iter().enumerate() {
        if n > 0 {
            let class = sizes
                .get(i)
                .map_or_else(|| format!("#{i}"), |&s| human_size(s));
            t.row(vec![class, n.to_string()]);
        }
    }
    if r.blocks() > 0 {
        out.push_str(&t.render());
    }
    out
}

// ---------------------------------------------------------------- create

pub fn create(
    name: &str,
    preset: Preset,
    shards: Option<u32>,
    classes: &[(u32, u32)],
    mode_bits: Option<u32>,
    max_processes: Option<u32>,
) -> Out {
    let mut cfg = match preset {
        Preset::Group => PoolConfig::group_pool(),
        Preset::PerUser => PoolConfig::per_user_pool(),
    };
    if let Some(n) = shards {
        cfg = cfg.shards(n);
    }
    for &(size, count) in classes {
        cfg = cfg.set_class(size, count);
    }
    if let Some(m) = mode_bits {
        cfg = cfg.mode(m);
    }
    if let Some(n) = max_processes {
        cfg = cfg.max_processes(n);
    }
    let pool = Pool::create(name, &cfg)?;
    let cfg = pool.config();
    let mut out = format!(
        "created pool {}: {}, {}, {}, mode {}\n  {} per class, headspace {}, tailspace {}, {}\n\n",
        pool.name(),
        plural(cfg.classes().len() as u64, "class", "classes"),
        plural(cfg.total_blocks(), "block", "blocks"),
        bytes(pool.mapped_size()),
        mode(cfg.permissions()),
        plural(cfg.shard_count().into(), "shard", "shards"),
        human_size(cfg.headspace_bytes()),
        human_size(cfg.tailspace_bytes()),
        plural(cfg.process_slots().into(), "process slot", "process slots"),
    );
    let room = cfg.headspace_bytes() + cfg.tailspace_bytes();
    let mut t = Table::new(&[
        ("CLASS", Align::Right),
        ("PAYLOAD", Align::Right),
        ("BLOCKS", Align::Right),
    ]);
    for c in cfg.classes() {
        t.row(vec![
            human_size(c.size),
            human_size(c.size.saturating_sub(room)),
            c.count.to_string(),
        ]);
    }
    out.push_str(&t.render());
    // Dropping the handle detaches this process; the pool stays.
    drop(pool);
    Ok(out)
}

// ---------------------------------------------------------------- destroy

pub fn destroy(name: &str, force: bool) -> Out {
    let info = inspect::identify(name)?;
    let live = match info.kind {
        Kind::Foreign if !force => {
            let mut f = foreign(info);
            if let Failure::Foreign { hint, .. } = &mut f {
                *hint = "; refusing to remove it (--force removes it anyway)";
            }
            return Err(f);
        }
        Kind::Foreign => 0,
        Kind::Pool => PoolView::open(&info.name)
            .map(|v| v.stats().processes.iter().filter(|p| p.alive).count() as u64)
            .unwrap_or(0),
        Kind::Ring => inspect::ring(&info.name)
            .map(|r| ring_parties(&r).1)
            .unwrap_or(0),
    };
    match info.kind {
        Kind::Ring => Ring::unlink(&info.name)?,
        _ => Pool::unlink(&info.name)?,
    }
    if live > 0 {
        eprintln!(
            "ssm: note: {} still {} {} mapped; its memory is freed when the last one closes it",
            plural(live, "live process", "live processes"),
            if live == 1 { "has" } else { "have" },
            info.name
        );
    }
    let what = match info.kind {
        Kind::Foreign => "object",
        Kind::Pool => "pool",
        Kind::Ring => "ring",
    };
    Ok(format!("removed {what} {}\n", info.name))
}
