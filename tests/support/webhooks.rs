//! Webhook receivers for the tests of the binary: a real HTTP/1.1 server on 127.0.0.1 that
//! records every request (headers, body, arrival time) and answers as a script says (a
//! status, a slow status, a hang past the sender's timeout, a connection closed without an
//! answer); the `[webhooks]` configuration pointing at it; and the check of signatures with
//! the Standard Webhooks reference library (`verify_webhooks.py`, the PyPI package
//! `standardwebhooks`), an implementation that is not the code under test.
//!
//! The receiver runs on a tokio runtime of its own, so synchronous tests (which spawn
//! processes) and async ones use it alike.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The signing secret of the test endpoints (the Standard Webhooks specification's example).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The path every test endpoint receives on.
pub const PATH: &str = "/hooks/contractd";

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Answer this status at once.
    Status(u16),
    /// Answer this status after a delay.
    SlowStatus(u16, Duration),
    /// Read the request, say nothing for this long, then close the connection.
    Hang(Duration),
    /// Read the request and close the connection without answering.
    Close,
}

impl Reply {
    /// Whether this reply accepts the event (a 2xx status).
    pub fn accepts(self) -> bool {
        match self {
            Reply::Status(code) | Reply::SlowStatus(code, _) => (200..300).contains(&code),
            Reply::Hang(_) | Reply::Close => false,
        }
    }
}

/// Decides the reply from the request's `webhook-id`, its body (JSON, `Null` when it is
/// not) and which attempt of that id it is (1 for the first request with this id).
pub type Script = Arc<dyn Fn(&str, &Value, usize) -> Reply + Send + Sync>;

/// A script that always answers `reply`.
pub fn always(reply: Reply) -> Script {
    Arc::new(move |_, _, _| reply)
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request method.
    pub method: String,
    /// The request target.
    pub path: String,
    /// Every header, names in lower case (the last value of a repeated header).
    pub headers: BTreeMap<String, String>,
    /// The body, as sent.
    pub body: String,
    /// When the whole request had arrived.
    pub arrived: Instant,
    /// Which attempt of its `webhook-id` this was (1-based).
    pub attempt: usize,
    /// What the receiver answered (or did instead).
    pub reply: Reply,
}

impl Received {
    /// The `webhook-id` header ("" when missing).
    pub fn id(&self) -> &str {
        self.headers.get("webhook-id").map_or("", String::as_str)
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("a webhook body is not JSON ({error}): {}", self.body))
    }

    /// Whether the receiver accepted it (answered 2xx).
    pub fn accepted(&self) -> bool {
        self.reply.accepts()
    }
}

/// What the connections share.
struct State {
    /// Every request so far, in arrival order.
    requests: Mutex<Vec<Received>>,
    /// How to answer.
    script: Mutex<Script>,
}

impl State {
    /// Record a request and decide its reply.
    fn record(
        &self,
        method: String,
        path: String,
        headers: BTreeMap<String, String>,
        body: String,
    ) -> Reply {
        let script = self
            .script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let id = headers.get("webhook-id").cloned().unwrap_or_default();
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let attempt = 1 + requests.iter().filter(|seen| seen.id() == id).count();
        let reply = script(&id, &parsed, attempt);
        requests.push(Received {
            method,
            path,
            headers,
            body,
            arrived: Instant::now(),
            attempt,
            reply,
        });
        reply
    }
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    /// Where it listens.
    address: SocketAddr,
    /// The requests and the script.
    state: Arc<State>,
    /// Its runtime, shut down when dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// Listen on a free port of 127.0.0.1 and answer as `script` says.
    pub fn start(script: Script) -> Receiver {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("binding the webhook receiver");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let address = listener.local_addr().expect("the receiver's address");
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(script),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("webhook-receiver")
            .enable_all()
            .build()
            .expect("the receiver's runtime");
        let shared = Arc::clone(&state);
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(serve_connection(stream, state));
            }
        });
        Receiver {
            address,
            state,
            runtime: Some(runtime),
        }
    }

    /// The endpoint URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.address)
    }

    /// Answer from now on as `script` says.
    pub fn set_script(&self, script: Script) {
        *self.state.script.lock().unwrap_or_else(|p| p.into_inner()) = script;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// A short account of what arrived, for failure messages.
    pub fn summary(&self) -> String {
        let requests = self.requests();
        let shown: Vec<String> = requests
            .iter()
            .rev()
            .take(12)
            .rev()
            .map(|r| format!("{}#{} {:?}", r.id(), r.attempt, r.reply))
            .collect();
        format!(
            "{} request(s), the last: {}",
            requests.len(),
            shown.join(", ")
        )
    }

    /// Wait (asynchronously) until `done` holds for the requests so far; panics after
    /// `timeout`, naming `what`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            assert!(
                started.elapsed() < timeout,
                "{what}: not within {timeout:?} ({})",
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`Receiver::wait_until`] for synchronous tests.
    pub fn wait_until_blocking(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            assert!(
                started.elapsed() < timeout,
                "{what}: not within {timeout:?} ({})",
                self.summary()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Where a request's head ends in `buffer` (just after the blank line), if it is there.
fn head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Read more of the connection into `buffer`; `false` at its end or on an error.
async fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(read) => {
            buffer.extend_from_slice(&chunk[..read]);
            true
        }
    }
}

/// Serve the requests of one connection (keep-alive) until it closes or a reply closes it.
async fn serve_connection(mut stream: TcpStream, state: Arc<State>) {
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let head_length = loop {
            if let Some(end) = head_end(&buffer) {
                break end;
            }
            if buffer.len() > 64 * 1024 || !fill(&mut stream, &mut buffer).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_length]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split_whitespace();
        let method = request_line.next().unwrap_or("").to_string();
        let path = request_line.next().unwrap_or("").to_string();
        let mut headers = BTreeMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let content_length: usize = headers
            .get("content-length")
            .and_then(|length| length.parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_length + content_length {
            if !fill(&mut stream, &mut buffer).await {
                return;
            }
        }
        let body = String::from_utf8_lossy(&buffer[head_length..head_length + content_length])
            .into_owned();
        buffer.drain(..head_length + content_length);
        let reply = state.record(method, path, headers, body);
        let code = match reply {
            Reply::Status(code) => code,
            Reply::SlowStatus(code, delay) => {
                tokio::time::sleep(delay).await;
                code
            }
            Reply::Hang(delay) => {
                tokio::time::sleep(delay).await;
                return;
            }
            Reply::Close => return,
        };
        let reason = match code {
            200 => "OK",
            204 => "No Content",
            410 => "Gone",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Status",
        };
        let response = format!(
            "HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A `--config` file: `[webhooks]` with the given settings (`timeout_ms`, …) and one
/// `[[webhooks.endpoints]]` per (name, url), signed with [`SECRET`].
pub fn webhooks_config(settings: &[(&str, u64)], endpoints: &[(&str, &str)]) -> String {
    let mut text = String::from("[webhooks]\n");
    for (key, value) in settings {
        text.push_str(&format!("{key} = {value}\n"));
    }
    for (name, url) in endpoints {
        text.push_str(&format!(
            "\n[[webhooks.endpoints]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n"
        ));
    }
    text
}

/// The verifier script run by [`verify_signatures`].
pub const VERIFIER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/verify_webhooks.py"
);

/// Verify every request with the Standard Webhooks reference library (`python3
/// verify_webhooks.py`, package `standardwebhooks`): `Ok` with its report when each one
/// verifies, `Err` naming the first that does not. Panics when the verifier cannot run at
/// all (python3 or the package missing): that is a broken set-up, never a verdict.
pub fn verify_signatures(secret: &str, requests: &[Received]) -> Result<String, String> {
    let capture = json!({
        "secret": secret,
        "requests": requests
            .iter()
            .map(|request| json!({"headers": request.headers, "body": request.body}))
            .collect::<Vec<_>>(),
    });
    let mut file = tempfile::Builder::new()
        .prefix("webhooks-capture-")
        .suffix(".json")
        .tempfile()
        .expect("a capture file");
    std::io::Write::write_all(&mut file, capture.to_string().as_bytes())
        .expect("writing the capture");
    let output = Command::new("python3")
        .arg(VERIFIER)
        .arg(file.path())
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run python3 {VERIFIER} ({error}): python3 is needed to verify signatures"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.status.code() {
        Some(0) => Ok(stdout),
        Some(1) => Err(stderr),
        _ => panic!(
            "the signature verifier could not run ({}): {stderr}{stdout}\n\
             install it with: python3 -m pip install standardwebhooks (.ci/run does)",
            output.status
        ),
    }
}
