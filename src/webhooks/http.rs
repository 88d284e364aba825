//! One delivery attempt over HTTP: a signed `POST`, bounded in time and in what is read
//! back, classified as delivered, endpoint gone or worth a retry. Nothing a receiver does
//! (stall, close, redirect, answer forever) can block beyond the timeout or make us panic.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use reqwest::redirect::Policy;
use tokio::time::timeout_at;

use super::secret::SigningKey;
use super::signature::sign;

/// At most this much of an answer's body is read; the rest is never downloaded (the
/// connection is dropped instead of drained).
pub const MAX_RESPONSE_BYTES: usize = 4096;

/// At most this much of a refusal's body goes into the attempt's recorded error.
const ERROR_BODY_CHARS: usize = 200;

/// How long an idle connection is kept for the next attempt to the same host. Short, so
/// that a receiver closing idle keep-alive connections (many do after 5 s) rarely closes
/// one under a new request.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// What an attempt's outcome means for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx answer: the receiver has it.
    Delivered,
    /// 410 Gone: the receiver asks us to stop; the endpoint is disabled.
    Gone,
    /// Anything else (other status, redirect, timeout, connection or TLS failure): try
    /// again later.
    Retry,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// What follows for the delivery.
    pub verdict: Verdict,
    /// The answer's status, when one came.
    pub http_status: Option<u16>,
    /// What went wrong, for the attempt's record: no URL, no credential, no secret.
    pub error: Option<String>,
    /// From the start of the request to the end of reading the answer.
    pub duration: Duration,
}

/// Sends attempts. One client for every endpoint: connections are pooled per scheme, host
/// and port, so endpoints never share one unless they share a server.
#[derive(Debug, Clone)]
pub struct Sender {
    /// The HTTP client: no redirects, rustls.
    client: reqwest::Client,
    /// The bound on one whole attempt.
    timeout: Duration,
}

impl Sender {
    /// A sender whose attempts each take at most `timeout`, connecting included.
    pub fn new(timeout: Duration) -> Result<Sender, reqwest::Error> {
        let client = reqwest::Client::builder()
            // A redirect is a failure: following it would send signed events to a place
            // nobody configured.
            .redirect(Policy::none())
            .connect_timeout(timeout)
            .pool_idle_timeout(POOL_IDLE)
            .build()?;
        Ok(Sender { client, timeout })
    }

    /// The bound on one attempt.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// POST `body` to `url`, signed for `webhook_id` at `timestamp_s`.
    pub async fn send(
        &self,
        url: &url::Url,
        key: &SigningKey,
        webhook_id: &str,
        timestamp_s: i64,
        body: Vec<u8>,
    ) -> SendResult {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let signature = sign(key, webhook_id, timestamp_s, &body);
        let request = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!("contractd/", env!("CARGO_PKG_VERSION"))),
            )
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp_s.to_string())
            .header("webhook-signature", signature)
            .body(body);
        let response = match timeout_at(deadline, request.send()).await {
            Err(_) => {
                return SendResult {
                    verdict: Verdict::Retry,
                    http_status: None,
                    error: Some(format!("no answer within {} ms", self.timeout.as_millis())),
                    duration: started.elapsed(),
                }
            }
            Ok(Err(error)) => {
                return SendResult {
                    verdict: Verdict::Retry,
                    http_status: None,
                    error: Some(describe(&error, url)),
                    duration: started.elapsed(),
                }
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        // The status decides; the body is read (a little, within the same deadline) only to
        // say why a refusal happened and to let a small answer free its connection.
        let body = read_prefix(response, deadline).await;
        let (verdict, error) = if status.is_success() {
            (Verdict::Delivered, None)
        } else if status == reqwest::StatusCode::GONE {
            (Verdict::Gone, Some(refusal(status, "endpoint gone", &body)))
        } else if status.is_redirection() {
            (
                Verdict::Retry,
                Some(refusal(status, "redirect not followed", &body)),
            )
        } else {
            (Verdict::Retry, Some(refusal(status, "not accepted", &body)))
        };
        SendResult {
            verdict,
            http_status: Some(status.as_u16()),
            error,
            duration: started.elapsed(),
        }
    }
}

/// Read at most [`MAX_RESPONSE_BYTES`] of the body, stopping at `deadline`, at the end, or
/// at an error, whichever comes first.
async fn read_prefix(mut response: reqwest::Response, deadline: tokio::time::Instant) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE_BYTES {
        match timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let room = MAX_RESPONSE_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
        }
    }
    body
}

/// The recorded error of a refused attempt: the status, what it means, and the start of
/// the answer's body as printable text.
fn refusal(status: reqwest::StatusCode, meaning: &str, body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ERROR_BODY_CHARS)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {}: {meaning}", status.as_u16())
    } else {
        format!("HTTP {}: {meaning}: {text}", status.as_u16())
    }
}

/// A transport error as text: its causes joined, without the URL (reqwest puts the whole
/// URL, credentials included, in its message unless asked not to), and any credential of
/// `url` scrubbed should a cause repeat it.
fn describe(error: &reqwest::Error, url: &url::Url) -> String {
    let kind = if error.is_connect() {
        "cannot connect"
    } else if error.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    let mut parts = vec![kind.to_string()];
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(current) = cause {
        let text = current.to_string();
        if !parts.iter().any(|seen| seen.contains(&text)) {
            parts.push(text);
        }
        cause = current.source();
    }
    let mut text = parts.join(": ");
    for credential in [url.username(), url.password().unwrap_or("")] {
        if !credential.is_empty() {
            text = text.replace(credential, "***");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::webhooks::secret::SecretString;

    const TIMEOUT: Duration = Duration::from_millis(700);
    /// What an attempt may take beyond the timeout (scheduling on a busy machine).
    const SLACK: Duration = Duration::from_millis(400);

    fn key() -> SigningKey {
        SigningKey::from_secret(&SecretString::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
            .expect("a valid secret")
    }

    fn url(address: SocketAddr, path: &str) -> url::Url {
        url::Url::parse(&format!("http://{address}{path}")).expect("a URL")
    }

    async fn attempt(address: SocketAddr) -> SendResult {
        let sender = Sender::new(TIMEOUT).expect("a client");
        sender
            .send(
                &url(address, "/hook"),
                &key(),
                "evt_1",
                1_764_547_200,
                b"{}".to_vec(),
            )
            .await
    }

    /// What an axum receiver saw: headers and body of each request.
    type Seen = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

    /// An axum receiver answering every POST with `status`.
    async fn receiver(status: StatusCode) -> (SocketAddr, Seen) {
        let seen: Seen = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let record = record.clone();
                async move {
                    record.lock().expect("lock").push((headers, body.to_vec()));
                    (status, "go away")
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (address, seen)
    }

    /// A raw receiver: every connection is handed to `handle` after its request's head is
    /// read (or not at all when `read_request` is false).
    async fn raw_receiver<F, Fut>(handle: F) -> SocketAddr
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("an address");
        let handle = Arc::new(handle);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handle = handle.clone();
                tokio::spawn(async move { handle(stream).await });
            }
        });
        address
    }

    /// Read until the end of the request's head and the few bytes of body we send.
    async fn read_request(stream: &mut tokio::net::TcpStream) {
        let mut buffer = vec![0u8; 8192];
        let mut read = Vec::new();
        while !String::from_utf8_lossy(&read).contains("\r\n\r\n{}") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read.extend_from_slice(&buffer[..n]),
            }
        }
    }

    #[tokio::test]
    async fn a_2xx_answer_is_delivered_with_the_signed_headers() {
        let (address, seen) = receiver(StatusCode::NO_CONTENT).await;
        let result = attempt(address).await;
        assert_eq!(result.verdict, Verdict::Delivered);
        assert_eq!(result.http_status, Some(204));
        assert_eq!(result.error, None);
        let seen = seen.lock().expect("lock");
        let (headers, body) = &seen[0];
        assert_eq!(body, b"{}");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["webhook-id"], "evt_1");
        assert_eq!(headers["webhook-timestamp"], "1764547200");
        assert_eq!(
            headers["webhook-signature"].to_str().expect("ASCII"),
            sign(&key(), "evt_1", 1_764_547_200, b"{}")
        );
    }

    #[tokio::test]
    async fn a_500_is_retried_with_the_start_of_the_answer() {
        let (address, _) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
        let result = attempt(address).await;
        assert_eq!(result.verdict, Verdict::Retry);
        assert_eq!(result.http_status, Some(500));
        assert_eq!(
            result.error.as_deref(),
            Some("HTTP 500: not accepted: go away")
        );
    }

    #[tokio::test]
    async fn a_410_means_the_endpoint_is_gone() {
        let (address, _) = receiver(StatusCode::GONE).await;
        let result = attempt(address).await;
        assert_eq!(result.verdict, Verdict::Gone);
        assert_eq!(result.http_status, Some(410));
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_costs_the_timeout_and_no_more() {
        let address = raw_receiver(|mut stream| async move {
            read_request(&mut stream).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(stream);
        })
        .await;
        let result = attempt(address).await;
        assert_eq!(result.verdict, Verdict::Retry);
        assert_eq!(result.http_status, None);
        assert_eq!(result.error.as_deref(), Some("no answer within 700 ms"));
        assert!(result.duration >= TIMEOUT, "{:?}", result.duration);
        assert!(result.duration < TIMEOUT + SLACK, "{:?}", result.duration);
    }

    #[tokio::test]
    async fn a_receiver_that_closes_without_answering_is_retried() {
        let address = raw_receiver(|mut stream| async move {
            read_request(&mut stream).await;
            drop(stream);
        })
        .await;
        let result = attempt(address).await;
        assert_eq!(result.verdict, Verdict::Retry);
        assert_eq!(result.http_status, None);
        let error = result.error.expect("an error");
        assert!(error.starts_with("request failed"), "{error}");
        assert!(!error.contains("127.0.0.1"), "no URL in {error}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_without_the_url_or_its_credentials() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("an address");
        drop(listener);
        let sender = Sender::new(TIMEOUT).expect("a client");
        let with_credentials =
            url::Url::parse(&format!("http://alice:pa55w0rd@{address}/hook")).expect("a URL");
        let result = sender
            .send(&with_credentials, &key(), "evt_1", 1, b"{}".to_vec())
            .await;
        assert_eq!(result.verdict, Verdict::Retry);
        let error = result.error.expect("an error");
        assert!(error.starts_with("cannot connect"), "{error}");
        assert!(
            !error.contains("pa55w0rd") && !error.contains("alice"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_tls_failure_is_retried() {
        // A plain-HTTP server behind an https URL: the handshake fails.
        let address = raw_receiver(|mut stream| async move {
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer).await;
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        })
        .await;
        let sender = Sender::new(TIMEOUT).expect("a client");
        let https = url::Url::parse(&format!("https://{address}/hook")).expect("a URL");
        let result = sender
            .send(&https, &key(), "evt_1", 1, b"{}".to_vec())
            .await;
        assert_eq!(result.verdict, Verdict::Retry);
        assert_eq!(result.http_status, None);
        assert!(result.error.is_some());
        assert!(result.duration < TIMEOUT + SLACK, "{:?}", result.duration);
    }

    #[tokio::test]
    async fn a_redirect_is_a_failure_and_is_not_followed() {
        let (target, seen) = receiver(StatusCode::OK).await;
        let address = raw_receiver(move |mut stream| async move {
            read_request(&mut stream).await;
            let answer = format!(
                "HTTP/1.1 302 Found\r\nlocation: http://{target}/hook\r\ncontent-length: 0\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.flush().await;
        })
        .await;
        let result = attempt(address).await;
        assert_eq!(result.verdict, Verdict::Retry);
        assert_eq!(result.http_status, Some(302));
        assert_eq!(
            result.error.as_deref(),
            Some("HTTP 302: redirect not followed")
        );
        assert!(
            seen.lock().expect("lock").is_empty(),
            "the redirect was followed"
        );
    }

    #[tokio::test]
    async fn a_huge_body_after_200_is_not_downloaded() {
        let address = raw_receiver(|mut stream| async move {
            read_request(&mut stream).await;
            let size = 10 * 1024 * 1024;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let block = vec![b'x'; 64 * 1024];
            for _ in 0..(size / block.len()) {
                if stream.write_all(&block).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let result = attempt(address).await;
        assert_eq!(result.verdict, Verdict::Delivered);
        assert_eq!(result.http_status, Some(200));
        assert!(result.duration < TIMEOUT + SLACK, "{:?}", result.duration);
    }

    #[tokio::test]
    async fn an_endless_trickle_after_200_ends_at_the_timeout_and_counts_by_the_status() {
        let address = raw_receiver(|mut stream| async move {
            read_request(&mut stream).await;
            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            loop {
                if stream.write_all(b"1\r\nx\r\n").await.is_err() {
                    return;
                }
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let result = attempt(address).await;
        assert_eq!(result.verdict, Verdict::Delivered);
        assert_eq!(result.http_status, Some(200));
        assert!(result.duration < TIMEOUT + SLACK, "{:?}", result.duration);
    }

    #[tokio::test]
    async fn a_500_trickling_its_body_is_retried_within_the_timeout() {
        let address = raw_receiver(|mut stream| async move {
            read_request(&mut stream).await;
            let head = "HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            loop {
                if stream.write_all(b"1\r\nz\r\n").await.is_err() {
                    return;
                }
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let result = attempt(address).await;
        assert_eq!(result.verdict, Verdict::Retry);
        assert_eq!(result.http_status, Some(503));
        assert!(result.duration < TIMEOUT + SLACK, "{:?}", result.duration);
        let error = result.error.expect("an error");
        assert!(error.starts_with("HTTP 503: not accepted: z"), "{error}");
    }

    #[test]
    fn a_refusal_body_is_cut_and_made_printable() {
        let body = format!("line\none\u{7}{}", "y".repeat(1000));
        let error = refusal(
            reqwest::StatusCode::BAD_REQUEST,
            "not accepted",
            body.as_bytes(),
        );
        assert!(
            error.starts_with("HTTP 400: not accepted: line one "),
            "{error}"
        );
        assert!(error.chars().count() < 260, "{error}");
    }
}
