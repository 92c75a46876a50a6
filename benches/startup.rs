//! Start-up to ready: the time from spawning `keyturn serve` to its `listening` log line,
//! which is written after settings are validated, the audit store is opened and the
//! socket is bound. Target: under 50 ms on a 2-core machine.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

fn start_once(data_dir: &std::path::Path) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyturn"))
        .args(["serve", "--port", "0"])
        .env_clear()
        .env("KEYTURN_BACKEND", "local")
        .env("KEYTURN_AUDIT_STORE", "sqlite")
        .env("KEYTURN_DATA_DIR", data_dir)
        .env("KEYTURN_VAULTS", "https://kv-bench.vault.azure.net/")
        .env(
            "ServiceBusConnection__fullyQualifiedNamespace",
            "sb-bench.servicebus.windows.net",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("keyturn starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("\"listening\"") => break started.elapsed(),
            Some(Ok(_)) => continue,
            _ => panic!("keyturn exited before listening"),
        }
    };
    child.kill().expect("kill");
    child.wait().expect("reaped");
    ready
}

fn startup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    // First start creates the store; measure the steady case an app restart sees.
    start_once(dir.path());
    c.bench_function("serve: spawn to listening", |b| {
        b.iter_custom(|iterations| (0..iterations).map(|_| start_once(dir.path())).sum())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(10));
    targets = startup
}
criterion_main!(benches);
