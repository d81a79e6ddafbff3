//! Helpers shared by integration tests; each test file uses only some of them.
#![allow(dead_code)]

pub mod log_suite;

/// Runs `command` to its end and returns its standard output, asserting that it succeeded (the
/// failure shows both outputs).
pub fn successful_output(command: &mut std::process::Command) -> String {
    let output = command.output().expect("the command starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
