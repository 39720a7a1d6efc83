//! Test helpers for churnwatch's end-to-end tests: a real Kafka-protocol broker (tansu) on a
//! free loopback port, service processes started and signalled as a user would, and small
//! Kafka probes (produce, consume, consumer-group lag). Every wait is bounded.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use churnwatch_kafka::rdkafka::config::ClientConfig;
use churnwatch_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use churnwatch_kafka::rdkafka::message::OwnedMessage;
use churnwatch_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use churnwatch_kafka::rdkafka::{Message, Offset, TopicPartitionList};

/// Where tansu keeps messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// In memory: fast, lost when the broker stops.
    ///
    /// Only for consumers that read their topics from the start. tansu 0.6.0's memory engine
    /// answers a fetch at an offset inside a stored record batch from the *next* batch on
    /// (the records between are never delivered), and reports a partition's log end as its
    /// last batch's base offset + 1. A consumer resuming from a committed offset (a restart,
    /// a rebalance) therefore loses messages on it; the services detect and log that
    /// ("the broker skipped messages"), but such tests need [`Storage::Sqlite`].
    Memory,
    /// In a SQLite file in the broker's directory: survives a broker restart.
    Sqlite,
}

/// Returns the tansu binary, or fails the test with how to install it.
pub fn tansu_binary() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cargo")
        });
    let candidate = home.join("bin").join("tansu");
    if candidate.is_file() {
        return candidate;
    }
    panic!(
        "the tansu broker is not installed ({} is missing); run scripts/install-tansu.sh (scripts/test.sh does this)",
        candidate.display()
    );
}

/// Returns a loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts TCP connections on the loopback port.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || {
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .is_ok()
    })
}

/// Polls `check` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A tansu broker on a loopback port, stopped when dropped.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    port: u16,
    storage: Storage,
    dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start(storage: Storage) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut broker = Self {
            child: None,
            port: free_port(),
            storage,
            dir,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let engine = match self.storage {
            Storage::Memory => "memory://tansu/".to_owned(),
            Storage::Sqlite => "sqlite://tansu.db".to_owned(),
        };
        let log =
            std::fs::File::create(self.dir.path().join("tansu.log")).expect("broker log file");
        let child = Command::new(tansu_binary())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                &engine,
            ])
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(30)),
            "tansu did not listen on port {}; see {}",
            self.port,
            self.log_path().display()
        );
    }

    /// Returns the bootstrap servers.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Returns the broker's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }

    /// Stops the broker (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A service process, killed when dropped.
#[derive(Debug)]
pub struct Service {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Starts `program` with `args` and extra environment, logging to `log_dir`.
    pub fn start(program: &Path, args: &[&str], env: &[(&str, &str)], log_dir: &Path) -> Self {
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // One file per start, so a restarted service's log is its own.
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = log_dir.join(format!("{name}-{}-{n}.log", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("service log file");
        let mut cmd = Command::new(program);
        // Every service gets its admin endpoint on a free port (parallel tests would collide
        // on the defaults); `admin_addr` reads it back from the log.
        cmd.env("CHURNWATCH_ADMIN_ADDR", "127.0.0.1:0");
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self {
            name,
            child: Some(child),
            log,
        }
    }

    /// Returns the service's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Returns the address the service's admin endpoint listens on, once it has logged it.
    pub fn admin_addr(&self) -> Option<String> {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("admin endpoint listening"))?;
        let start = line.find("127.0.0.1:")?;
        let rest = &line[start..];
        let end = rest
            .char_indices()
            .skip("127.0.0.1:".len())
            .find(|(_, c)| !c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        Some(rest[..end].to_owned())
    }

    /// Returns whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; returns the status and how long
    /// it took, or `None` if it did not exit in time (it is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<(ExitStatus, Duration)> {
        let mut child = self.child.take()?;
        let started = Instant::now();
        send_signal(&child, "TERM");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((status, started.elapsed()));
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal by name (e.g. "HUP") to the running process.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            send_signal(child, name);
        }
    }

    /// Kills the process with SIGKILL (kill -9), as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Returns the service name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Sends a signal by name with `kill`, as an operator would.
fn send_signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status();
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Produces keyed messages to `topic` and waits for every acknowledgement.
pub fn produce(
    brokers: &str,
    topic: &str,
    messages: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> usize {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("a producer");
    let mut futures = Vec::new();
    for (key, payload) in messages {
        futures.push(churnwatch_kafka::send(
            &producer,
            FutureRecord::to(topic)
                .key(key.as_bytes())
                .payload(payload.as_slice()),
        ));
    }
    let n = futures.len();
    for r in futures::executor::block_on(futures::future::join_all(futures)) {
        assert!(matches!(r, Ok(Ok(_))), "produce to {topic} failed: {r:?}");
    }
    n
}

fn probe(brokers: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a probe consumer")
}

/// Reads every message of `topic` from the beginning until none arrives for `quiet`.
pub fn consume_all(brokers: &str, topic: &str, quiet: Duration) -> Vec<OwnedMessage> {
    let consumer = probe(
        brokers,
        &format!("probe-{}-{}", std::process::id(), free_port()),
    );
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while last.elapsed() < quiet && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(m.detach());
            last = Instant::now();
        }
    }
    out
}

/// Returns a header of a message as text.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    use churnwatch_kafka::rdkafka::message::Headers;
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Returns how many partitions `topic` has, or `None` when the broker cannot say.
fn partition_count(consumer: &BaseConsumer, topic: &str) -> Option<i32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    Some(metadata.topics().first()?.partitions().len() as i32)
}

/// Returns the number of messages ever written to `topic` (the sum of its partitions' high
/// watermarks), or `None` when the broker cannot say.
pub fn topic_end(brokers: &str, topic: &str) -> Option<i64> {
    let consumer = probe(brokers, &format!("probe-end-{}", std::process::id()));
    let partitions = partition_count(&consumer, topic)?;
    let mut end = 0;
    for p in 0..partitions {
        end += consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .ok()?
            .1;
    }
    Some(end)
}

/// Returns the sum over `topic`'s partitions of the offsets consumer `group` committed (`None`
/// when the broker cannot say). With offsets counted from 0, this is how many messages the
/// group has finished with; unlike a watermark-based lag it does not depend on how the broker
/// reports the log end.
pub fn group_committed(brokers: &str, group: &str, topic: &str) -> Option<i64> {
    let consumer = probe(brokers, group);
    let partitions = partition_count(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .ok()?;
    Some(
        (0..partitions)
            .map(
                |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => 0,
                },
            )
            .sum(),
    )
}

/// Commits `offset` for every partition of `topic` on behalf of consumer group `group`, as
/// `kafka-consumer-groups --reset-offsets` would: the group must have no running members.
///
/// # Panics
///
/// When the broker refuses the commit.
pub fn set_group_committed(brokers: &str, group: &str, topic: &str, offset: i64) {
    let consumer = probe(brokers, group);
    let partitions = partition_count(&consumer, topic)
        .unwrap_or_else(|| panic!("{topic}'s partitions are unknown to the broker"));
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(offset))
            .expect("a valid offset");
    }
    consumer
        .commit(&tpl, churnwatch_kafka::rdkafka::consumer::CommitMode::Sync)
        .unwrap_or_else(|e| panic!("committing offset {offset} for {group} on {topic}: {e}"));
}

/// Sends `GET path` over HTTP/1.0 (no chunked replies) to `addr` and returns the status code and the body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Returns the value of the first sample of `series` (name with labels, as written) in a
/// Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The OTLP protocol types of [`OtlpCollector`]'s spans.
pub use opentelemetry_proto;

/// A span an [`OtlpCollector`] received, with the service that sent it.
pub type ReceivedSpan = (String, opentelemetry_proto::tonic::trace::v1::Span);

/// An OTLP/HTTP trace collector on loopback: it accepts protobuf export requests on
/// `/v1/traces` and keeps their spans.
#[derive(Debug)]
pub struct OtlpCollector {
    addr: std::net::SocketAddr,
    spans: std::sync::Arc<std::sync::Mutex<Vec<ReceivedSpan>>>,
}

impl OtlpCollector {
    /// Starts the collector on a free loopback port.
    ///
    /// # Panics
    ///
    /// When no port can be bound.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let spans = std::sync::Arc::default();
        let sink = std::sync::Arc::clone(&spans);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = std::sync::Arc::clone(&sink);
                std::thread::spawn(move || serve_otlp(stream, &sink));
            }
        });
        Self { addr, spans }
    }

    /// Returns the endpoint to give an exporter, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns the spans received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Answers the export requests of one keep-alive connection until the client closes it.
fn serve_otlp(mut stream: TcpStream, sink: &std::sync::Mutex<Vec<ReceivedSpan>>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message as _;
    use std::io::{Read, Write};

    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while data.len() < end + 4 + length {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
        let body: Vec<u8> = data.drain(..end + 4 + length).skip(end + 4).collect();
        let status = match ExportTraceServiceRequest::decode(body.as_slice()) {
            Ok(request) if head.starts_with("post /v1/traces ") => {
                let mut spans = sink.lock().unwrap_or_else(|p| p.into_inner());
                for rs in request.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                            Value::StringValue(s) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                        spans.push((service.clone(), span));
                    }
                }
                "200 OK"
            }
            _ => "400 Bad Request",
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
