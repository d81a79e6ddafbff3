//! `taskfold bench restart` as an operator runs it: it fills a log through the engine, writes
//! the partition stores on the way, restarts on them and finds every task again (it fails
//! otherwise).

mod common;

use std::process::Command;

#[test]
fn bench_restart_finds_every_task_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("taskfold.toml");
    std::fs::write(&config, "[queue]\nsnapshot_every_events = 500\n").unwrap();
    let data_dir = dir.path().join("data");
    let stdout = common::successful_output(
        Command::new(env!("CARGO_BIN_EXE_taskfold"))
            .args(["bench", "restart", "--tasks", "3000", "--concurrency", "64"])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn"),
    );
    assert!(stdout.contains("created 3000 tasks"), "{stdout}");
    assert!(stdout.contains("ready with 3000 tasks"), "{stdout}");
    let stored: u64 = (0..4)
        .map(|partition| {
            taskfold::engine::store::peek_offset(&data_dir, partition)
                .unwrap()
                .unwrap_or(0)
        })
        .sum();
    assert!(stored > 0, "the fill wrote the partition stores");
}
