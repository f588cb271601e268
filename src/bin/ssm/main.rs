//! `ssm`: see and repair the shared memory of this library's pools and rings.
//!
//! Reading commands (`list`, `stat`, `audit`) map objects read-only through
//! `ssm::inspect` and never register with or change a segment; `reclaim`,
//! `create` and `destroy` change things and say so.

mod cmd;
mod fail;
mod json;
mod table;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::fail::exit;

const TOP_AFTER: &str = "\
Names are POSIX shared memory names: a leading '/' is added when missing, and
the object lives in /dev/shm.

Exit status:
  0  success (audit: the pool is consistent)
  1  usage error, invalid name or configuration, or another failure
  2  not found: no object of that name
  3  permission denied by the object's owner and mode
  4  not a pool or ring of this library (a foreign object), or not the kind
     the command works on (audit and reclaim need a pool)
  5  incompatible layout: another layout version or architecture, or a
     truncated object
  6  corrupted: the audit (or a reclaim) found an inconsistency
  7  exists: create found an object of that name
  8  not ready: still being created, or its creator died while creating it

With --json, results go to stdout as one JSON document with snake_case keys;
on failure stdout gets {\"error\": {\"kind\", \"exit_code\", \"message\"}} and
stderr the message. 'ssm help COMMAND' describes each command's document.

Examples:
  ssm create /net.pool --preset group --shards 8 --class 2K=4096
  ssm list
  ssm stat /net.pool
  ssm stat /net.pool --json | jq '.held_by_dead'
  ssm reclaim /net.pool
  ssm audit /net.pool && echo consistent
  ssm destroy /net.pool";

const LIST_AFTER: &str = "\
Objects are recognised by their magic number; anything else in /dev/shm is
skipped (--all shows it as 'foreign'). Objects this user may not read are
not listed. PROCESSES counts, for a pool, the registered processes and how
many of them still run; for a ring, its reader and writers.

JSON: {\"objects\": [{\"name\", \"kind\" (pool|ring|foreign), \"size\", \"uid\",
\"gid\", \"mode\" (octal string), \"processes\", \"alive\", \"reader\" ({\"pid\",
\"alive\"} or null), \"writers\" ([{\"pid\", \"alive\"}]), \"error\" (null, or why
the object could not be read)}], \"foreign_skipped\"}. Fields that do not
apply to a kind are null.

Examples:
  ssm list
  ssm list --all
  ssm list --json";

const STAT_AFTER: &str = "\
Read-only: maps the object without registering, safe on a live, busy pool
(the counts are a moment's picture). For a pool: per size class the block
size, largest payload, blocks, free blocks (in all and per shard), blocks in
process caches, allocated, moving to a free list, and blocked allocators;
per attached process its pid, whether it still runs and the blocks it holds;
the blocks held by dead processes (what `ssm reclaim` would recover) and
pending free-list operations. For a ring: capacity, queued values, access
mode, and the reader and writers with whether they still run.

JSON (pool): {\"name\", \"kind\": \"pool\", \"size\", \"uid\", \"gid\", \"mode\",
\"creator\": {\"pid\", \"alive\"}, \"config\": {\"shards\", \"headspace\",
\"tailspace\", \"max_processes\", \"cache_size\"}, \"classes\": [{\"size\",
\"max_payload\", \"blocks\", \"free\", \"free_per_shard\", \"cached\",
\"allocated\", \"moving\", \"waiters\"}], \"totals\": {\"blocks\", \"free\",
\"cached\", \"allocated\"}, \"processes\": [{\"slot\", \"pid\", \"state\", \"alive\",
\"held\", \"allocated\", \"cached\"}], \"held_by_dead\", \"pending_operations\"}
JSON (ring): {\"name\", \"kind\": \"ring\", \"size\", \"uid\", \"gid\", \"mode\",
\"capacity\", \"queued\", \"access\", \"reader\": {\"pid\", \"alive\"} or null,
\"writers\": [{\"pid\", \"alive\"}]}

Examples:
  ssm stat /net.pool
  ssm stat net.pool --json
  ssm stat /net.flow42";

const AUDIT_AFTER: &str = "\
Read-only: walks every free list and checks that each block is in exactly
one place (free on one list, cached or allocated by a registered process, or
in a recorded pending operation). Exits 0 when the pool is consistent and 6
with the first inconsistency otherwise. Exact on a quiescent pool; on a busy
pool it retries a few times before it believes an inconsistency.

JSON: {\"name\", \"consistent\": true, \"blocks\", \"free\", \"cached\",
\"allocated\", \"pending_operations\", \"classes\": [{\"size\", \"blocks\",
\"free\", \"free_per_shard\", \"cached\", \"allocated\", \"pushing\",
\"pending\"}]}, or {\"name\", \"consistent\": false, \"inconsistency\"} (exit 6).

Examples:
  ssm audit /net.pool
  ssm audit /net.pool --json";

const RECLAIM_AFTER: &str = "\
Attaches to the pool (it registers for the duration of the sweep) and
recovers everything held or left half done by processes that are no longer
running: their allocated and cached blocks, blocks of registrations that are
gone, and their pending free-list operations. Safe while other processes run;
running it again finds nothing.

JSON: {\"name\", \"processes\": [{\"pid\", \"slot\", \"blocks\"}], \"blocks\",
\"blocks_per_class\": [{\"size\", \"blocks\"}], \"orphans\",
\"operations_completed\"}

Examples:
  ssm reclaim /net.pool
  ssm reclaim /net.pool --json";

const CREATE_AFTER: &str = "\
Presets (block sizes 256 B, 512 B, 1, 2, 4, 16, 64, 256 KiB and 1 MiB;
headspace 128 B, tailspace 32 B, 4 shards per class, 64 process slots):
  group     1024, 768, 512, 384, 256, 128, 64, 32, 16 blocks; mode 0660
  per-user  128, 96, 64, 48, 32, 16, 8, 2, 0 blocks; mode 0600

--class SIZE=COUNT sets the block count of the class of SIZE bytes, or adds
that class. SIZE is the block size, headspace and tailspace included: bytes,
or a number with a suffix K, KiB, M or MiB (powers of 1024). Repeat --class
for several classes. The blocks of a class are spread over its shards, not
multiplied.

Examples:
  ssm create /net.pool --preset group
  ssm create /me.pool --preset per-user --shards 2 --class 2K=512 --class 9KiB=64
  ssm create /lab.pool --preset group --mode 0600 --max-processes 128";

const DESTROY_AFTER: &str = "\
Removes the name of a pool or ring. Processes that have it mapped keep using
it; the memory is freed when the last one closes it (the command warns when
live processes are attached). An object that is not a pool or ring of this
library is refused (exit 4) unless --force is given.

Examples:
  ssm destroy /net.pool
  ssm destroy /stale-object --force";

/// See and repair the shared memory pools and rings of the ssm library.
#[derive(Parser, Debug)]
#[command(
    name = "ssm",
    version,
    about = "See and repair the shared memory pools and rings of the ssm library",
    long_about = "See and repair the shared memory of the ssm library: lock-free packet-buffer \
                  pools and the rings that carry buffer handles between processes. list, stat \
                  and audit only read; reclaim, create and destroy change things.",
    after_help = TOP_AFTER,
    arg_required_else_help = true,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List every pool and ring of this library in /dev/shm
    #[command(after_help = LIST_AFTER)]
    List {
        /// Also show objects that are not pools or rings of this library
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show a pool's blocks per class and process, or a ring's state
    #[command(after_help = STAT_AFTER)]
    Stat {
        /// Pool or ring name
        name: String,
        /// Print JSON instead of tables
        #[arg(long)]
        json: bool,
    },
    /// Prove that no block of a pool is lost or in two places
    #[command(after_help = AUDIT_AFTER)]
    Audit {
        /// Pool name
        name: String,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Recover the blocks of processes that died
    #[command(after_help = RECLAIM_AFTER)]
    Reclaim {
        /// Pool name
        name: String,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Create a pool
    #[command(after_help = CREATE_AFTER)]
    Create {
        /// Pool name
        name: String,
        /// Starting configuration
        #[arg(long, value_enum)]
        preset: Preset,
        /// Shards per size class (1 to 64)
        #[arg(long, value_name = "N")]
        shards: Option<u32>,
        /// Set or add a size class: COUNT blocks of SIZE bytes (repeatable)
        #[arg(long = "class", value_name = "SIZE=COUNT", value_parser = parse_class)]
        classes: Vec<(u32, u32)>,
        /// Permission bits in octal (default: the preset's)
        #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
        mode: Option<u32>,
        /// Process slots: handles attached at once (1 to 1023)
        #[arg(long, value_name = "N")]
        max_processes: Option<u32>,
    },
    /// Remove the name of a pool or ring
    #[command(after_help = DESTROY_AFTER)]
    Destroy {
        /// Pool or ring name
        name: String,
        /// Remove the object even if it is not a pool or ring of this library
        #[arg(long)]
        force: bool,
    },
}

/// The starting configuration of `create`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// The group pool: shared by a group's processes, mode 0660
    Group,
    /// The per-user pool: smaller, mode 0600
    PerUser,
}

fn parse_class(s: &str) -> Result<(u32, u32), String> {
    let (size, count) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not SIZE=COUNT (example: 2K=1024)"))?;
    let size = table::parse_bytes(size)?;
    let size = u32::try_from(size).map_err(|_| format!("block size {size} is too large"))?;
    let count = count
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("block count '{count}' is not a whole number"))?;
    Ok((size, count))
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0o");
    match u32::from_str_radix(t, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "'{s}' is not permission bits in octal (example: 0660)"
        )),
    }
}

/// Writes `text` to stdout; a closed pipe (`ssm list | head`) is not an
/// error worth reporting.
fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version go to stdout and succeed; usage errors exit
            // 1 (clap's own 2 means "not found" here).
            return ExitCode::from(if e.use_stderr() {
                exit::OTHER
            } else {
                exit::OK
            });
        }
    };
    let json = matches!(
        cli.command,
        Command::List { json: true, .. }
            | Command::Stat { json: true, .. }
            | Command::Audit { json: true, .. }
            | Command::Reclaim { json: true, .. }
    );
    let result = match cli.command {
        Command::List { all, json } => cmd::list(all, json),
        Command::Stat { name, json } => cmd::stat(&name, json),
        Command::Audit { name, json } => cmd::audit(&name, json),
        Command::Reclaim { name, json } => cmd::reclaim(&name, json),
        Command::Create {
            name,
            preset,
            shards,
            classes,
            mode,
            max_processes,
        } => cmd::create(&name, preset, shards, &classes, mode, max_processes),
        Command::Destroy { name, force } => cmd::destroy(&name, force),
    };
    match result {
        Ok(text) => {
            print_out(&text);
            ExitCode::from(exit::OK)
        }
        Err(f) => {
            if json {
                print_out(&f.json().render());
            }
            eprintln!("ssm: {}", f.message());
            ExitCode::from(f.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn classes_and_modes_parse() {
        assert_eq!(parse_class("2K=1024"), Ok((2048, 1024)));
        assert_eq!(parse_class("512=0"), Ok((512, 0)));
        assert_eq!(parse_class("1MiB=4"), Ok((1 << 20, 4)));
        assert!(parse_class("2K").is_err());
        assert!(parse_class("2K=x").is_err());
        assert!(parse_class("8G=1").is_err());
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("7777").is_err());
    }
}
