//! Logging of `mailbridge run` as a process: the JSON format and the
//! filter variables. The runs have no pipeline, so they need no server.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `mailbridge run` in `dir` with only the given environment
/// variables, stops it with SIGTERM once its metrics endpoint listens,
/// and returns its standard error.
fn run_and_stop(dir: &Path, env: &[(&str, &str)]) -> String {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let stderr = std::fs::File::create(dir.join("stderr.log")).expect("create log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailbridge"))
        .arg("run")
        .current_dir(dir)
        .env_clear()
        .env("MAILBRIDGE_METRICS__LISTEN", &listen)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start mailbridge run");

    let address: SocketAddr = listen.parse().expect("address");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(address).is_err() {
        let exited = child.try_wait().expect("check the exit");
        assert!(exited.is_none(), "exited early with {exited:?}");
        assert!(Instant::now() < deadline, "metrics endpoint never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success(), "kill failed: {status}");
    let exit = child.wait().expect("wait for mailbridge");

    let log = std::fs::read_to_string(dir.join("stderr.log")).expect("read log file");
    assert!(exit.success(), "exit status {exit}; stderr:\n{log}");
    log
}

/// Returns a loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[test]
fn json_format_variable_writes_json_lines() {
    let dir = tempfile::tempdir().expect("temporary directory");

    let log = run_and_stop(dir.path(), &[("MAILBRIDGE_LOG_FORMAT", "json")]);

    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.len() >= 3,
        "start, signal and stop are logged:\n{log}"
    );
    let mut messages = Vec::new();
    for line in &lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
        assert!(event.is_object(), "{line}");
        assert!(event["level"].is_string(), "no level: {line}");
        let message = event["message"].as_str();
        assert!(message.is_some(), "no message: {line}");
        messages.extend(message.map(str::to_owned));
    }
    assert!(messages.iter().any(|m| m == "mailbridge started"), "{log}");
}

#[test]
fn log_variable_filters_by_target() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let env = [
        ("MAILBRIDGE_LOG", "warn,mailbridge::pipeline::runner=info"),
        ("RUST_LOG", "debug"),
    ];

    let log = run_and_stop(dir.path(), &env);

    assert!(log.contains("mailbridge started"), "{log}");
    assert!(log.contains("mailbridge stopped"), "{log}");
    // Logged with the target `mailbridge`, which the filter keeps at warn.
    assert!(!log.contains("Stop signal received"), "{log}");
}

#[test]
fn rust_log_filters_without_other_level() {
    let dir = tempfile::tempdir().expect("temporary directory");

    let log = run_and_stop(dir.path(), &[("RUST_LOG", "warn")]);

    assert_eq!(log, "", "nothing at warn or above was expected");
}

#[test]
fn file_level_wins_over_rust_log() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        dir.path().join("mailbridge.toml"),
        "[log]\nlevel = \"info\"\n",
    )
    .expect("write config");
    let env = [
        ("MAILBRIDGE_CONFIG", "mailbridge.toml"),
        ("RUST_LOG", "warn"),
    ];

    let log = run_and_stop(dir.path(), &env);

    assert!(log.contains("mailbridge started"), "{log}");
}

#[test]
fn invalid_log_variables_exit_78() {
    let dir = tempfile::tempdir().expect("temporary directory");

    let output = Command::new(env!("CARGO_BIN_EXE_mailbridge"))
        .arg("config")
        .current_dir(dir.path())
        .env_clear()
        .env("MAILBRIDGE_LOG_FORMAT", "xml")
        .env("MAILBRIDGE_LOG", "info,mailbridge=loud")
        .output()
        .expect("mailbridge runs");

    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    let format = stderr
        .lines()
        .find(|line| line.starts_with("log.format"))
        .unwrap_or_else(|| panic!("no log.format line: {stderr}"));
    assert!(format.contains("MAILBRIDGE_LOG_FORMAT"), "{format}");
    assert!(format.contains("text, json"), "{format}");
    let level = stderr
        .lines()
        .find(|line| line.starts_with("log.level"))
        .unwrap_or_else(|| panic!("no log.level line: {stderr}"));
    assert!(
        level.contains("environment variable MAILBRIDGE_LOG)"),
        "{level}"
    );
    assert!(level.contains("invalid filter"), "{level}");
}
