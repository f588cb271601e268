//! Runs the `crash_torture` example: workers SIGKILLed at random moments,
//! reclaimed and respawned; nothing may be lost or handed out twice.

use std::process::Command;
use std::time::Duration;

mod common;

#[test]
fn three_hundred_random_kills_lose_nothing() {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples/crash_torture"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is not built (cargo test builds examples)",
        bin.display()
    );
    let out = common::within(Duration::from_secs(240), move || {
        Command::new(bin)
            .args(["--kills", "300", "--workers", "4", "--seed", "7"])
            .output()
            .expect("run crash_torture")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "crash_torture failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("kills=300 lost=0 duplicated=0 audit=ok"),
        "unexpected summary:\n{stdout}\n{stderr}"
    );
}
