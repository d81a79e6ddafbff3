//! `taskfold bench lifecycle` against a real `taskfold serve`: every lifecycle completes, no
//! claim comes back empty, the paced mode and the wake-up rounds report their numbers.

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-lifecycle-test-token";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data_dir: &std::path::Path) -> (Server, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_taskfold"))
        .args(["serve", "--listen", &listen, "--data-dir"])
        .arg(data_dir)
        .env("TASKFOLD_ROOT_ACCESS_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "the server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, format!("http://{listen}"))
}

/// `taskfold bench lifecycle` with `arguments` against the server; its output.
fn bench(root_url: &str, arguments: &[&str]) -> String {
    common::successful_output(
        Command::new(env!("CARGO_BIN_EXE_taskfold"))
            .args(["bench", "lifecycle", "--root-url", root_url])
            .args(arguments)
            .env("TASKCLUSTER_CLIENT_ID", "static/taskcluster/root")
            .env("TASKCLUSTER_ACCESS_TOKEN", TOKEN),
    )
}

#[test]
fn every_lifecycle_completes_and_parked_claims_wake() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, root_url) = serve(dir.path());
    let stdout = bench(
        &root_url,
        &[
            "--tasks",
            "300",
            "--concurrency",
            "8",
            "--rate",
            "500",
            "--wakeup-rounds",
            "3",
        ],
    );
    assert!(
        stdout.contains("300 lifecycles in") && stdout.contains("(0 empty claims)"),
        "{stdout}"
    );
    // Paced at 500/s, 300 lifecycles take at least 0.6 s.
    let seconds: f64 = stdout
        .split(" lifecycles in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|number| number.parse().ok())
        .unwrap();
    assert!(seconds >= 0.59, "{stdout}");
    for method in ["createTask", "claimWork", "reportCompleted"] {
        assert!(
            stdout.contains(method) && stdout.contains("(300 calls)"),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("wake-up") && stdout.contains("(3 calls)"),
        "{stdout}"
    );
}

#[test]
fn the_listener_comparison_counts_every_message_it_expects() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, root_url) = serve(dir.path());
    let stdout = bench(
        &root_url,
        &["--tasks", "200", "--concurrency", "8", "--listeners", "3"],
    );
    // Five messages per lifecycle (defined, pending, running, completed, group resolved),
    // to each of the three listeners.
    assert!(
        stdout.contains("listeners received 3000 messages (100% of 3000 expected), 0 disconnected"),
        "{stdout}"
    );
    assert!(stdout.contains("throughput with 3 listeners"), "{stdout}");
}
