//! `taskfold bench retain` as an operator runs it: it fills a data directory through the
//! engine from a task file, restarts a `taskfold serve` on it, reads, runs lifecycles there and
//! on an empty directory, and reports every figure (never judged for speed here).

mod common;

use std::process::Command;

use serde_json::Value;

/// A definition with the placeholders the bench fills in; the file's own `created` is
/// replaced too.
const TASK_FILE: &str = r#"{
  "taskQueueId": "retain-test/builder",
  "taskGroupId": "{{taskGroupId}}",
  "created": "2020-01-01T00:00:00.000Z",
  "routes": ["index.retain-test.{{taskId}}"],
  "payload": {"command": ["true"], "artifacts": {"public": {"type": "directory", "path": "/out", "expires": "{{expires}}"}}},
  "metadata": {"name": "retain test", "description": "d", "owner": "test@taskfold.invalid", "source": "https://taskfold.invalid/test"}
}"#;

#[test]
fn bench_retain_reports_every_figure_of_a_resolved_fill() {
    let dir = tempfile::tempdir().unwrap();
    let task_file = dir.path().join("task.json");
    std::fs::write(&task_file, TASK_FILE).unwrap();
    let data_dir = dir.path().join("data");
    let stdout = common::successful_output(
        Command::new(env!("CARGO_BIN_EXE_taskfold"))
            .args(["bench", "retain", "--tasks", "2000", "--resolved"])
            .args([
                "--group-size",
                "10",
                "--concurrency",
                "64",
                "--reads",
                "100",
            ])
            .args([
                "--lifecycles",
                "200",
                "--lifecycle-concurrency",
                "8",
                "--json",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--task-file")
            .arg(&task_file)
            .env("RUST_LOG", "warn"),
    );
    let report: Value = serde_json::from_str(&stdout).expect("the report is JSON");
    let number = |pointer: &str| {
        report
            .pointer(pointer)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("no {pointer} in {report:#}"))
    };
    assert_eq!(number("/tasks_filled"), 2000.0, "{report:#}");
    assert_eq!(number("/tasks_in_store"), 2000.0, "{report:#}");
    assert_eq!(
        number("/tasks_pending"),
        0.0,
        "every task resolved: {report:#}"
    );
    assert_eq!(report["resolved"], true);
    assert_eq!(number("/group_size"), 10.0);
    assert!(number("/definition_bytes") > 300.0, "{report:#}");
    assert!(number("/fill_seconds") > 0.0 && number("/fill_tasks_per_second") > 0.0);
    assert!(number("/fill_peak_rss_bytes") > 0.0);

    let disk = report["disk"].as_array().expect("disk usage by directory");
    let log = disk
        .iter()
        .find(|usage| usage["name"] == "log")
        .expect("the log's share");
    assert!(log["bytes"].as_f64().unwrap() > 0.0, "{report:#}");
    let sum: f64 = disk
        .iter()
        .filter_map(|usage| usage["bytes"].as_f64())
        .sum();
    assert_eq!(sum, number("/disk_total_bytes"));

    assert!(number("/ready_seconds") > 0.0);
    assert!(number("/ready_rss_bytes") > 0.0);
    assert!(number("/ready_peak_rss_bytes") >= number("/ready_rss_bytes"));
    for read in ["read_task", "read_status"] {
        assert_eq!(number(&format!("/{read}/count")), 100.0, "{report:#}");
        let (p50, p99) = (
            number(&format!("/{read}/p50_ms")),
            number(&format!("/{read}/p99_ms")),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{report:#}");
    }
    for run in ["lifecycles_with_history", "lifecycles_empty"] {
        assert_eq!(number(&format!("/{run}/lifecycles")), 200.0, "{report:#}");
        assert_eq!(number(&format!("/{run}/empty_claims")), 0.0, "{report:#}");
        assert!(number(&format!("/{run}/per_second")) > 0.0);
        assert!(number(&format!("/{run}/peak_rss_bytes")) >= number(&format!("/{run}/rss_bytes")));
    }

    // The empty directory of the comparison is gone; the filled one stays.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(data_dir.join("log").is_dir());
}

#[test]
fn bench_retain_prints_a_table_of_a_pending_fill() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = common::successful_output(
        Command::new(env!("CARGO_BIN_EXE_taskfold"))
            .args(["bench", "retain", "--tasks", "500", "--reads", "20"])
            .args(["--lifecycles", "20", "--lifecycle-concurrency", "4"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "warn"),
    );
    assert!(
        stdout.starts_with("500 tasks in the store, 500 pending (500 filled,"),
        "{stdout}"
    );
    for row in [
        "fill process peak RSS",
        "disk log/",
        "disk total",
        "time to ready",
        "server RSS at ready",
        "GET task/<id>/status",
        "lifecycles with the history",
        "lifecycles on an empty directory",
    ] {
        assert!(stdout.contains(row), "no {row}: {stdout}");
    }
}
