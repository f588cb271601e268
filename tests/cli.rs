//! The `ssm` command-line tool, run as a separate process against real
//! pools and rings: a pool created by the tool, loaded by a helper process
//! that is then killed, shown with its dead holder, reclaimed, audited and
//! removed; the exit status of every kind of failure; listings; JSON output.

#![cfg(feature = "cli")]

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{arg, hear, role, say, Helper, Name};
use ssm::layout::Geometry;
use ssm::{Handle, Pool, PoolConfig, Ring, RingConfig};

const ENTRY: &str = "helper_entry";
const T: Duration = Duration::from_secs(60);

// Exit statuses, as documented in `ssm --help`.
const OK: i32 = 0;
const USAGE: i32 = 1;
const NOT_FOUND: i32 = 2;
const PERMISSION_DENIED: i32 = 3;
const FOREIGN: i32 = 4;
const LAYOUT: i32 = 5;
const CORRUPTED: i32 = 6;
const EXISTS: i32 = 7;
const NOT_READY: i32 = 8;

#[test]
fn helper_entry() {
    let Some(role) = role() else { return };
    match role.as_str() {
        "hold" => {
            let pool = Pool::open(&arg("pool")).unwrap();
            let n: usize = arg("count").parse().unwrap();
            let held: Vec<_> = (0..n).map(|_| pool.alloc(100).unwrap()).collect();
            say(format!("held {}", held.len()));
            hear(); // until killed
        }
        "churn" => {
            let pool = Pool::open(&arg("pool")).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            std::thread::spawn(move || {
                // The parent closes stdin when it wants the churn to end.
                let _ = std::io::stdin().read_to_end(&mut Vec::new());
                s.store(true, Ordering::Relaxed);
            });
            let mut held = std::collections::VecDeque::new();
            let mut i = 0u32;
            say("churning");
            while !stop.load(Ordering::Relaxed) && i < 5_000_000 {
                if let Ok(mut p) = pool.alloc(64 + (i as usize % 300)) {
                    p.fill(i as u8);
                    held.push_back((i as u8, p));
                }
                if held.len() > 16 {
                    let (tag, p) = held.pop_front().unwrap();
                    assert!(p.iter().all(|&b| b == tag));
                }
                i += 1;
            }
            drop(held);
            drop(pool);
        }
        "write" => {
            let ring = Ring::open(&arg("ring")).unwrap();
            ring.write(Handle::from_raw(42)).unwrap();
            say("wrote");
            hear(); // until killed
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

// ------------------------------------------------------------ running ssm

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn ssm_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ssm"))
}

/// Runs `cmd`, killing it and failing the test if it takes longer than `T`.
fn run_cmd(mut cmd: Command) -> std::io::Result<Run> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn()?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    if rx.recv_timeout(T).is_err() {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let _ = waiter.join();
        panic!("ssm {:?} hung: killed after {T:?}", cmd.get_args());
    }
    let out = waiter.join().unwrap()?;
    Ok(Run {
        code: out.status.code().expect("ssm killed by a signal"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    })
}

fn ssm(args: &[&str]) -> Run {
    let mut cmd = ssm_cmd();
    cmd.args(args);
    run_cmd(cmd).expect("run ssm")
}

/// Runs ssm and asserts its exit status.
fn expect(code: i32, args: &[&str]) -> Run {
    let r = ssm(args);
    assert_eq!(r.code, code, "ssm {args:?}\n{r}");
    r
}

/// Runs ssm with `--json`, asserts its exit status and parses stdout.
fn expect_json(code: i32, args: &[&str]) -> J {
    let mut a = args.to_vec();
    a.push("--json");
    let r = expect(code, &a);
    parse_json(&r.stdout).unwrap_or_else(|e| panic!("ssm {a:?}: invalid JSON: {e}\n{r}"))
}

fn create(name: &str, extra: &[&str]) -> Run {
    let mut args = vec!["create", name];
    args.extend_from_slice(extra);
    let r = expect(OK, &args);
    assert!(r.stdout.contains(&format!("created pool {name}")), "{r}");
    r
}

fn shm_path(name: &str) -> String {
    format!("/dev/shm{name}")
}

fn hold(name: &str, count: usize) -> Helper {
    let h = Helper::spawn(
        ENTRY,
        "hold",
        &[("pool", name.to_string()), ("count", count.to_string())],
    );
    assert_eq!(h.recv(T), format!("held {count}"));
    h
}

/// The process entry of `pid` in a `stat --json` document.
fn process(stat: &J, pid: u32) -> &J {
    stat.get("processes")
        .arr()
        .iter()
        .find(|p| p.get("pid").u64() == u64::from(pid))
        .unwrap_or_else(|| panic!("pid {pid} not among the processes: {stat:?}"))
}

// ------------------------------------------------------------ scenarios

#[test]
fn a_dead_holder_is_shown_reclaimed_audited_and_the_pool_destroyed() {
    let name = Name::new("life");
    create(
        &name,
        &["--preset", "per-user", "--shards", "2", "--class", "512=64"],
    );

    let st = expect_json(OK, &["stat", &name]);
    assert_eq!(st.get("name").str(), &*name);
    assert_eq!(st.get("kind").str(), "pool");
    assert_eq!(st.get("mode").str(), "0600");
    assert_eq!(st.get("config").get("shards").u64(), 2);
    let c512 = st
        .get("classes")
        .arr()
        .iter()
        .find(|c| c.get("size").u64() == 512)
        .expect("a 512-byte class");
    assert_eq!(c512.get("blocks").u64(), 64);
    assert_eq!(c512.get("free").u64(), 64);
    assert_eq!(c512.get("free_per_shard").arr().len(), 2);
    assert_eq!(st.get("held_by_dead").u64(), 0);

    // A process takes 10 blocks (and fills its cache), then dies.
    let holder = hold(&name, 10);
    let pid = holder.pid();
    let st = expect_json(OK, &["stat", &name]);
    assert!(process(&st, pid).get("alive").bool());
    holder.kill();

    // Human output: the dead holder's row and the blocks awaiting recovery.
    let r = expect(OK, &["stat", &name]);
    let cells: Vec<&str> = r
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.len() == 7 && c[1] == pid.to_string() && c[2] == "live")
        .unwrap_or_else(|| panic!("no row for pid {pid}\n{r}"));
    let row = cells.join(" ");
    assert_eq!(cells[3], "no", "alive column of {row:?}");
    let held: u64 = cells[4].parse().unwrap();
    assert!(held >= 10, "{row:?}");
    assert!(
        r.stdout
            .contains(&format!("blocks pending recovery:      {held}")),
        "{r}"
    );
    assert!(r.stdout.contains("pending free-list operations: 0"), "{r}");

    // JSON output: the same, for scripts.
    let st = expect_json(OK, &["stat", &name]);
    let p = process(&st, pid);
    assert_eq!(p.get("alive"), &J::Bool(false));
    assert_eq!(p.get("held").u64(), held);
    assert_eq!(
        p.get("held").u64(),
        p.get("allocated").u64() + p.get("cached").u64()
    );
    assert!(p.get("allocated").u64() >= 10);
    assert_eq!(st.get("held_by_dead").u64(), held);
    assert_eq!(st.get("pending_operations").u64(), 0);
    assert_eq!(st.get("totals").get("blocks").u64(), {
        st.get("classes")
            .arr()
            .iter()
            .map(|c| c.get("blocks").u64())
            .sum::<u64>()
    });
    // The audit sees the dead holder's blocks as held: still consistent.
    expect(OK, &["audit", &name]);

    // Reclaim recovers them and says from whom.
    let r = expect(OK, &["reclaim", &name]);
    assert!(
        r.stdout
            .contains(&format!("recovered 1 process, {held} blocks")),
        "{r}"
    );
    let prow = r
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&pid.to_string()))
        .unwrap_or_else(|| panic!("no report row for pid {pid}\n{r}"));
    assert_eq!(
        prow.split_whitespace().nth(2),
        Some(held.to_string().as_str()),
        "{r}"
    );
    let st = expect_json(OK, &["stat", &name]);
    assert_eq!(st.get("held_by_dead").u64(), 0);
    assert!(st.get("processes").arr().is_empty(), "{st:?}");
    assert_eq!(st.get("totals").get("allocated").u64(), 0);

    // A second holder, recovered with a JSON report.
    let holder = hold(&name, 3);
    let pid2 = holder.pid();
    holder.kill();
    let rep = expect_json(OK, &["reclaim", &name]);
    assert_eq!(rep.get("name").str(), &*name);
    let procs = rep.get("processes").arr();
    assert_eq!(procs.len(), 1, "{rep:?}");
    assert_eq!(procs[0].get("pid").u64(), u64::from(pid2));
    let blocks = rep.get("blocks").u64();
    assert!(blocks >= 3, "{rep:?}");
    assert_eq!(procs[0].get("blocks").u64(), blocks);
    let per_class = rep.get("blocks_per_class").arr();
    assert_eq!(
        per_class.iter().map(|c| c.get("blocks").u64()).sum::<u64>(),
        blocks
    );
    assert!(per_class
        .iter()
        .any(|c| c.get("size").u64() == 512 && c.get("blocks").u64() >= 3));
    // Idempotent: nothing is left.
    let again = expect_json(OK, &["reclaim", &name]);
    assert_eq!(again.get("blocks").u64(), 0);
    assert!(again.get("processes").arr().is_empty());
    let r = expect(OK, &["reclaim", &name]);
    assert!(r.stdout.contains("nothing to recover"), "{r}");

    // The audit passes and accounts for every block.
    let r = expect(OK, &["audit", &name]);
    assert!(r.stdout.contains("is consistent"), "{r}");
    let a = expect_json(OK, &["audit", &name]);
    assert_eq!(a.get("consistent"), &J::Bool(true));
    assert_eq!(a.get("allocated").u64(), 0);
    assert_eq!(a.get("free").u64(), a.get("blocks").u64());

    // Destroy removes the name.
    let r = expect(OK, &["destroy", &name]);
    assert!(
        r.stdout.contains(&format!("removed pool {}", name.0)),
        "{r}"
    );
    assert!(!std::path::Path::new(&shm_path(&name)).exists());
    let r = expect(NOT_FOUND, &["stat", &name]);
    assert!(r.stderr.contains("does not exist"), "{r}");
    expect(NOT_FOUND, &["destroy", &name]);
}

#[test]
fn missing_objects_exit_with_the_not_found_code() {
    let name = Name::new("missing");
    for cmd in ["stat", "audit", "reclaim", "destroy"] {
        let r = expect(NOT_FOUND, &[cmd, &name]);
        assert!(r.stderr.contains(&*name.0), "{r}");
    }
    for cmd in ["stat", "audit", "reclaim"] {
        let e = expect_json(NOT_FOUND, &[cmd, &name]);
        let e = e.get("error");
        assert_eq!(e.get("kind").str(), "not_found");
        assert_eq!(e.get("exit_code").u64(), NOT_FOUND as u64);
        assert!(e.get("message").str().contains(&*name.0));
    }
}

#[test]
fn foreign_objects_are_refused_with_their_own_code() {
    // A page-sized object with other contents, and a small one.
    for (tag, len) in [("foreign-big", 8192usize), ("foreign-small", 10)] {
        let name = Name::new(tag);
        std::fs::write(shm_path(&name), vec![b'x'; len]).unwrap();
        for cmd in ["stat", "audit", "reclaim", "destroy"] {
            let r = expect(FOREIGN, &[cmd, &name]);
            assert!(
                r.stderr.contains("not a pool or ring of this library"),
                "{r}"
            );
        }
        let e = expect_json(FOREIGN, &["stat", &name]);
        assert_eq!(e.get("error").get("kind").str(), "foreign");
        // Refused without --force: still there. With it: gone.
        assert!(std::path::Path::new(&shm_path(&name)).exists());
        let r = expect(OK, &["destroy", &name, "--force"]);
        assert!(
            r.stdout.contains(&format!("removed object {}", name.0)),
            "{r}"
        );
        assert!(!std::path::Path::new(&shm_path(&name)).exists());
    }
}

#[test]
fn a_ring_is_not_audited_or_reclaimed() {
    let name = Name::new("ring-kind");
    let ring = Ring::create(&name, &RingConfig::new().capacity(64)).unwrap();
    for cmd in ["audit", "reclaim"] {
        let r = expect(FOREIGN, &[cmd, &name]);
        assert!(r.stderr.contains("is a ring"), "{r}");
    }
    drop(ring);
    let r = expect(OK, &["destroy", &name]);
    assert!(
        r.stdout.contains(&format!("removed ring {}", name.0)),
        "{r}"
    );
    expect(NOT_FOUND, &["stat", &name]);
}

#[test]
fn create_refuses_an_existing_name_and_bad_arguments() {
    let name = Name::new("exists");
    create(&name, &["--preset", "group"]);
    let r = expect(EXISTS, &["create", &name, "--preset", "per-user"]);
    assert!(r.stderr.contains("already exists"), "{r}");
    let st = expect_json(OK, &["stat", &name]);
    assert_eq!(st.get("mode").str(), "0660", "the group pool is untouched");

    let other = Name::new("bad-args");
    // Usage errors and rejected configurations exit 1 and create nothing.
    for args in [
        vec!["create", &*other],
        vec!["create", &*other, "--preset", "everyone"],
        vec!["create", &*other, "--preset", "group", "--class", "2K"],
        vec!["create", &*other, "--preset", "group", "--class", "2Q=5"],
        vec!["create", &*other, "--preset", "group", "--shards", "0"],
        vec!["create", &*other, "--preset", "group", "--shards", "65"],
        vec!["create", &*other, "--preset", "group", "--mode", "999"],
        vec!["create", "a/b", "--preset", "group"],
        vec!["stat"],
        vec!["frobnicate"],
        vec![],
    ] {
        let r = expect(USAGE, &args);
        assert!(!r.stderr.is_empty(), "{r}");
        assert!(!std::path::Path::new(&shm_path(&other)).exists());
    }
    // Sizes with suffixes, a new class between the presets' ones.
    create(
        &other,
        &[
            "--preset", "group", "--class", "9KiB=3", "--class", "2K=7", "--mode", "0640",
        ],
    );
    let st = expect_json(OK, &["stat", &other]);
    assert_eq!(st.get("mode").str(), "0640");
    let classes = st.get("classes").arr();
    let sizes: Vec<u64> = classes.iter().map(|c| c.get("size").u64()).collect();
    assert_eq!(
        sizes,
        [256, 512, 1024, 2048, 4096, 9216, 16384, 65536, 262144, 1048576]
    );
    assert_eq!(classes[3].get("blocks").u64(), 7);
    assert_eq!(classes[5].get("blocks").u64(), 3);
}

#[test]
fn help_documents_exit_codes_json_and_examples() {
    let r = expect(OK, &["--help"]);
    for s in ["Exit status", "not found", "Examples:", "--json"] {
        assert!(r.stdout.contains(s), "missing {s:?}\n{r}");
    }
    for cmd in ["list", "stat", "audit", "reclaim", "create", "destroy"] {
        let r = expect(OK, &[cmd, "--help"]);
        assert!(r.stdout.contains("Examples:"), "{cmd}\n{r}");
        assert!(r.stdout.contains(&format!("ssm {cmd}")), "{cmd}\n{r}");
        if !matches!(cmd, "create" | "destroy") {
            assert!(r.stdout.contains("JSON"), "{cmd}\n{r}");
        }
    }
    expect(OK, &["--version"]);
}

#[test]
fn another_layout_version_exits_with_the_layout_code() {
    let name = Name::new("version");
    create(&name, &["--preset", "per-user"]);
    // The layout version is the u32 at offset 8 of the header.
    let path = shm_path(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[0..8], b"SSMPOOL\x01");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    for cmd in ["stat", "audit", "reclaim"] {
        let r = expect(LAYOUT, &[cmd, &name]);
        assert!(r.stderr.contains("layout version 2"), "{r}");
    }
    let e = expect_json(LAYOUT, &["stat", &name]);
    assert_eq!(e.get("error").get("kind").str(), "layout_mismatch");
    // Still recognised as a pool: destroy needs no --force.
    expect(OK, &["destroy", &name]);
}

#[test]
fn a_pool_that_never_became_ready_exits_with_the_not_ready_code() {
    let name = Name::new("unready");
    let mut bytes = vec![0u8; 8192];
    bytes[0..8].copy_from_slice(b"SSMPOOL\x01");
    std::fs::write(shm_path(&name), &bytes).unwrap();
    let r = expect(NOT_READY, &["stat", &name]);
    assert!(r.stderr.contains("not initialised"), "{r}");
}

#[test]
fn a_corrupted_pool_fails_the_audit() {
    let name = Name::new("corrupt");
    create(
        &name,
        &["--preset", "per-user", "--shards", "1", "--class", "512=32"],
    );
    expect(OK, &["audit", &name]);
    // Where the block metadata table lies, from the same configuration...
    let cfg = PoolConfig::per_user_pool().shards(1).set_class(512, 32);
    let geo = Geometry::new(&cfg).unwrap();
    let path = shm_path(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, geo.total_size);
    // ...and as the header records it (off_metas, the sixth offset at 96).
    let recorded = u64::from_le_bytes(bytes[136..144].try_into().unwrap());
    assert_eq!(recorded, geo.off_metas);
    // Block 0 is free, on the list of shard 0: zero its state word.
    let at = geo.off_metas as usize;
    assert_ne!(&bytes[at..at + 8], &[0; 8]);
    bytes[at..at + 8].copy_from_slice(&[0; 8]);
    std::fs::write(&path, &bytes).unwrap();

    let r = expect(CORRUPTED, &["audit", &name]);
    assert!(
        r.stderr.contains(&format!("audit of '{}' failed", name.0)),
        "{r}"
    );
    assert!(r.stdout.is_empty(), "{r}");
    let a = expect_json(CORRUPTED, &["audit", &name]);
    assert_eq!(a.get("consistent"), &J::Bool(false));
    assert_eq!(a.get("name").str(), &*name);
    assert!(!a.get("inconsistency").str().is_empty());
    // stat still reads it: one block is neither free nor held.
    let st = expect_json(OK, &["stat", &name]);
    assert_eq!(
        st.get("totals").get("free").u64(),
        st.get("totals").get("blocks").u64() - 1
    );
}

#[test]
fn permission_denied_exits_with_its_own_code() {
    let name = Name::new("denied");
    create(&name, &["--preset", "per-user"]); // mode 0600, owned by us
                                              // SAFETY: plain system call.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = ssm_cmd();
    cmd.args(["stat", &name]);
    if root {
        // Root reads anything: ask as another user.
        cmd.uid(65534).gid(65534);
    } else {
        // The owner is denied by mode 0000.
        std::fs::set_permissions(
            shm_path(&name),
            std::os::unix::fs::PermissionsExt::from_mode(0o000),
        )
        .unwrap();
    }
    let r = match run_cmd(cmd) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("skipped: cannot run ssm as another user: {e}");
            return;
        }
    };
    assert_eq!(r.code, PERMISSION_DENIED, "{r}");
    assert!(r.stderr.contains("permission denied"), "{r}");
    if root {
        // The other user does not see it in the listing either, and may not
        // reclaim or remove it.
        for args in [vec!["reclaim", &name], vec!["destroy", &name]] {
            let mut cmd = ssm_cmd();
            cmd.args(&args).uid(65534).gid(65534);
            let r = run_cmd(cmd).unwrap();
            assert_eq!(r.code, PERMISSION_DENIED, "{args:?}\n{r}");
        }
        let mut cmd = ssm_cmd();
        cmd.args(["list", "--json"]).uid(65534).gid(65534);
        let r = run_cmd(cmd).unwrap();
        assert_eq!(r.code, OK, "{r}");
        assert!(!r.stdout.contains(&*name.0), "{r}");
        assert!(std::path::Path::new(&shm_path(&name)).exists());
    }
}

#[test]
fn list_shows_pools_and_rings_and_skips_foreign_objects() {
    let pool = Name::new("list-pool");
    let ring = Name::new("list-ring");
    let junk = Name::new("list-junk");
    create(&pool, &["--preset", "per-user"]);
    let r = Ring::create(&ring, &RingConfig::new().capacity(128)).unwrap();
    std::fs::write(shm_path(&junk), vec![0u8; 4096]).unwrap();
    // A pool process that stays, and one that dies.
    let live = hold(&pool, 2);
    let dead = hold(&pool, 1);
    let dead_pid = dead.pid();
    dead.kill();
    // A ring writer that dies after writing.
    let writer = Helper::spawn(ENTRY, "write", &[("ring", ring.0.clone())]);
    assert_eq!(writer.recv(T), "wrote");
    let writer_pid = writer.pid();
    writer.kill();

    let out = expect(OK, &["list"]).stdout;
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(str::to_string)
    };
    let pl = line(&pool).unwrap_or_else(|| panic!("{} not listed\n{out}", pool.0));
    assert!(pl.contains(" pool "), "{pl}");
    assert!(pl.contains("0600"), "{pl}");
    assert!(pl.ends_with("2 (1 alive)"), "{pl}");
    let rl = line(&ring).unwrap_or_else(|| panic!("{} not listed\n{out}", ring.0));
    assert!(rl.contains(" ring "), "{rl}");
    assert!(rl.contains("no reader, 1 writer (0 alive)"), "{rl}");
    assert!(line(&junk).is_none(), "{out}");
    assert!(out.contains("skipped"), "{out}");

    let all = expect(OK, &["list", "--all"]).stdout;
    assert!(
        all.lines()
            .any(|l| l.starts_with(&*junk.0) && l.contains(" foreign ")),
        "{all}"
    );

    let doc = expect_json(OK, &["list"]);
    let objects = doc.get("objects").arr();
    let find = |name: &str| {
        objects
            .iter()
            .find(|o| o.get("name").str() == name)
            .unwrap_or_else(|| panic!("{name} not in {doc:?}"))
    };
    let p = find(&pool);
    assert_eq!(p.get("kind").str(), "pool");
    assert_eq!(p.get("processes").u64(), 2);
    assert_eq!(p.get("alive").u64(), 1);
    assert_eq!(p.get("error"), &J::Null);
    assert!(p.get("size").u64() > 4096);
    let q = find(&ring);
    assert_eq!(q.get("kind").str(), "ring");
    assert_eq!(q.get("reader"), &J::Null);
    let w = q.get("writers").arr();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].get("pid").u64(), u64::from(writer_pid));
    assert_eq!(w[0].get("alive"), &J::Bool(false));
    assert!(objects.iter().all(|o| o.get("kind").str() != "foreign"));
    assert!(doc.get("foreign_skipped").u64() >= 1);
    let doc = expect_json(OK, &["list", "--all"]);
    assert!(doc
        .get("objects")
        .arr()
        .iter()
        .any(|o| o.get("name").str() == &*junk.0 && o.get("kind").str() == "foreign"));

    // stat of the ring.
    let st = expect_json(OK, &["stat", &ring]);
    assert_eq!(st.get("kind").str(), "ring");
    assert_eq!(st.get("capacity").u64(), 128);
    assert_eq!(st.get("queued").u64(), 1);
    assert_eq!(st.get("access").str(), "read-write");
    assert_eq!(
        st.get("writers").arr()[0].get("pid").u64(),
        u64::from(writer_pid)
    );
    let txt = expect(OK, &["stat", &ring]).stdout;
    assert!(
        txt.contains("capacity 128, queued 1, access read-write"),
        "{txt}"
    );
    assert!(
        txt.lines().any(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c == ["writer", &writer_pid.to_string(), "no"]
        }),
        "{txt}"
    );
    // stat of the pool names the dead process.
    let st = expect_json(OK, &["stat", &pool]);
    assert_eq!(process(&st, dead_pid).get("alive"), &J::Bool(false));
    assert_eq!(process(&st, live.pid()).get("alive"), &J::Bool(true));

    live.kill();
    drop(r);
}

#[test]
fn reading_commands_are_safe_on_a_busy_pool() {
    let name = Name::new("busy");
    create(&name, &["--preset", "per-user", "--shards", "2"]);
    let churners: Vec<Helper> = (0..2)
        .map(|_| Helper::spawn(ENTRY, "churn", &[("pool", name.0.clone())]))
        .collect();
    for c in &churners {
        assert_eq!(c.recv(T), "churning");
    }
    for _ in 0..10 {
        let st = expect_json(OK, &["stat", &name]);
        // A moment's picture, but never more blocks than exist.
        let t = st.get("totals");
        assert!(
            t.get("free").u64() + t.get("cached").u64() + t.get("allocated").u64()
                <= t.get("blocks").u64()
        );
        expect(OK, &["list"]);
        // The audit retries on a busy pool; it must never call a healthy
        // one corrupted.
        let r = ssm(&["audit", &name]);
        assert!(r.code == OK, "{r}");
    }
    for c in churners {
        c.success(T);
    }
    let a = expect_json(OK, &["audit", &name]);
    assert_eq!(a.get("allocated").u64(), 0);
    assert_eq!(a.get("cached").u64(), 0);
    let st = expect_json(OK, &["stat", &name]);
    assert!(st.get("processes").arr().is_empty(), "{st:?}");
}

#[test]
fn json_strings_are_escaped() {
    // A name with characters JSON must escape, refused or not, comes back
    // as valid JSON.
    let e = expect_json(NOT_FOUND, &["stat", "/ssm-test-\"quoted\"\\back\tslash"]);
    assert!(e
        .get("error")
        .get("message")
        .str()
        .contains("\"quoted\"\\back\tslash"));
}

// ------------------------------------------------------------ a JSON reader

/// A parsed JSON value.
#[derive(Clone, Debug, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn get(&self, key: &str) -> &J {
        match self {
            J::Obj(fields) => {
                &fields
                    .iter()
                    .find(|(k, _)| k == key)
                    .unwrap_or_else(|| panic!("no key {key:?} in {self:?}"))
                    .1
            }
            _ => panic!("not an object: {self:?}"),
        }
    }
    fn u64(&self) -> u64 {
        match self {
            J::Num(n) if *n >= 0.0 && n.fract() == 0.0 => *n as u64,
            _ => panic!("not a whole number: {self:?}"),
        }
    }
    fn str(&self) -> &str {
        match self {
            J::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }
    fn bool(&self) -> bool {
        match self {
            J::Bool(b) => *b,
            _ => panic!("not a boolean: {self:?}"),
        }
    }
    fn arr(&self) -> &[J] {
        match self {
            J::Arr(a) => a,
            _ => panic!("not an array: {self:?}"),
        }
    }
}

/// Parses a complete JSON document (RFC 8259), surrounding whitespace
/// allowed; anything else is an error.
fn parse_json(text: &str) -> Result<J, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing text at byte {}", p.i));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }
    fn eat(&mut self, lit: &str) -> Result<(), String> {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            self.err(&format!("expected {lit}"))
        }
    }
    fn value(&mut self, depth: usize) -> Result<J, String> {
        if depth > 64 {
            return self.err("nested too deeply");
        }
        self.ws();
        match self.s.get(self.i) {
            None => self.err("unexpected end"),
            Some(b'n') => self.eat("null").map(|()| J::Null),
            Some(b't') => self.eat("true").map(|()| J::Bool(true)),
            Some(b'f') => self.eat("false").map(|()| J::Bool(false)),
            Some(b'"') => self.string().map(J::Str),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(J::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(J::Arr(items));
                        }
                        _ => return self.err("expected , or ]"),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(J::Obj(fields));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return self.err("expected a key");
                    }
                    let k = self.string()?;
                    if fields.iter().any(|(f, _)| *f == k) {
                        return self.err(&format!("duplicate key {k:?}"));
                    }
                    self.ws();
                    self.eat(":")?;
                    let v = self.value(depth + 1)?;
                    fields.push((k, v));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(J::Obj(fields));
                        }
                        _ => return self.err("expected , or }"),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => self.err("unexpected character"),
        }
    }
    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.s.get(self.i), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }
    fn number(&mut self) -> Result<J, String> {
        let start = self.i;
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        let int_start = self.i;
        match self.digits() {
            0 => return self.err("expected digits"),
            n if n > 1 && self.s[int_start] == b'0' => return self.err("leading zero"),
            _ => {}
        }
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return self.err("expected fraction digits");
            }
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return self.err("expected exponent digits");
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
        text.parse().map(J::Num).map_err(|e| format!("{e}"))
    }
    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        match h {
            Some(v) => {
                self.i += 4;
                Ok(v)
            }
            None => self.err("bad \\u escape"),
        }
    }
    fn string(&mut self) -> Result<String, String> {
        self.i += 1; // the opening quote
        let mut out = String::new();
        loop {
            let Some(&b) = self.s.get(self.i) else {
                return self.err("unterminated string");
            };
            match b {
                b'"' => {
                    self.i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.i += 1;
                    let Some(&e) = self.s.get(self.i) else {
                        return self.err("unterminated escape");
                    };
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                self.eat("\\u")?;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return self.err("unpaired surrogate");
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            match char::from_u32(c) {
                                Some(c) => out.push(c),
                                None => return self.err("invalid code point"),
                            }
                        }
                        _ => return self.err("unknown escape"),
                    }
                }
                0..=0x1f => return self.err("control character in string"),
                _ => {
                    // Copy one UTF-8 sequence.
                    let len = match b {
                        0x00..=0x7f => 1,
                        0xc0..=0xdf => 2,
                        0xe0..=0xef => 3,
                        _ => 4,
                    };
                    let chunk = self
                        .s
                        .get(self.i..self.i + len)
                        .and_then(|c| std::str::from_utf8(c).ok());
                    match chunk {
                        Some(c) => out.push_str(c),
                        None => return self.err("invalid UTF-8"),
                    }
                    self.i += len;
                }
            }
        }
    }
}

#[test]
fn the_json_reader_is_strict() {
    assert_eq!(parse_json(" null "), Ok(J::Null));
    assert_eq!(
        parse_json(r#"{"a": [1, -2.5e3, true], "b": "x\"\u00e9\ud83d\ude00"}"#),
        Ok(J::Obj(vec![
            (
                "a".into(),
                J::Arr(vec![J::Num(1.0), J::Num(-2500.0), J::Bool(true)])
            ),
            ("b".into(), J::Str("x\"é😀".into())),
        ]))
    );
    for bad in [
        "",
        "{",
        "[1,]",
        "{\"a\" 1}",
        "{\"a\":1,}",
        "01",
        "1.",
        "\"a",
        "\"\t\"",
        "nul",
        "{\"a\":1,\"a\":2}",
        "[1] x",
        "'a'",
        "\"\\x\"",
    ] {
        assert!(parse_json(bad).is_err(), "{bad:?} accepted");
    }
}
