//! A fault-injecting HTTP proxy in front of the emulator.
//!
//! Functions reach AWS through it (their `AWS_ENDPOINT_URL`, see
//! [`crate::Emulator::behind`]); it forwards every request to the emulator
//! and, for the callers it is told to fault (by access key), at a chosen
//! rate and seed, answers instead as a struggling AWS does:
//!
//! | fault | what the caller sees | reached the emulator? |
//! |---|---|---|
//! | `Throttle` | the service's own throttling error: `ThrottlingException` (400, or 429), DynamoDB's `ProvisionedThroughputExceededException`, EC2's `RequestLimitExceeded` (503), Query APIs' `Throttling`, S3's `SlowDown` (503) | no |
//! | `ServerError` | 500 `InternalError`/`InternalFailure` or 503 `ServiceUnavailable` | no |
//! | `DropBefore` | the connection closes, no response | no |
//! | `DropAfter` | the connection closes after the request was served (a committed write whose answer is lost) | yes |
//! | `Timeout` | no answer for [`Plan::hold`], then a closed connection (the SDK's attempt timeout fires first when shorter) | yes |
//! | `Kill` | the calling function's process is SIGKILLed ([`Killer`]) before or after the request is served | either |
//!
//! The error bodies follow each protocol's wire format (awsJson `__type`,
//! awsQuery `ErrorResponse`, EC2's `Response/Errors`, S3's `Error`), so the
//! SDK classifies them exactly as it would AWS's: throttling and 5xx are
//! retried with backoff, dropped connections are transient I/O errors.
//!
//! Decisions are a pure function of the seed and the request's sequence
//! number among faultable requests: a run with the same seed injects the
//! same faults at the same calls when the calls come in the same order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::runtime::Killer;

/// One kind of injected fault (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// The service's throttling error.
    Throttle,
    /// A 500 or 503.
    ServerError,
    /// The connection closes before the request is forwarded.
    DropBefore,
    /// The connection closes after the request was served.
    DropAfter,
    /// No answer for a while, then a closed connection.
    Timeout,
    /// The caller's process is SIGKILLed.
    Kill,
}

impl Fault {
    /// Every fault, in the order [`Plan::weights`] names them.
    pub const ALL: [Fault; 6] =
        [Fault::Throttle, Fault::ServerError, Fault::DropBefore, Fault::DropAfter, Fault::Timeout, Fault::Kill];
}

/// What to inject.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The share of faultable requests that get a fault, 0.0 to 1.0.
    pub rate: f64,
    /// The seed of every decision.
    pub seed: u64,
    /// Relative weights of the faults, in [`Fault::ALL`] order. A `Kill` for a
    /// caller without a registered [`Killer`] becomes a `DropAfter`.
    pub weights: [u32; 6],
    /// How long a `Timeout` holds the request before closing the connection.
    pub hold: Duration,
    /// At most this many faults, then none (`None`: no limit).
    pub limit: Option<u64>,
    /// Fault only these operations (`None`: every operation).
    pub operations: Option<Vec<String>>,
}

impl Plan {
    /// No faults.
    pub fn none() -> Self {
        Plan {
            rate: 0.0,
            seed: 0,
            weights: [30, 20, 10, 15, 10, 15],
            hold: Duration::from_secs(3),
            limit: None,
            operations: None,
        }
    }

    /// Exactly `fault` on each of the next `count` faultable requests.
    pub fn next(fault: Fault, count: u64) -> Self {
        let mut weights = [0; 6];
        if let Some(i) = Fault::ALL.iter().position(|f| *f == fault) {
            weights[i] = 1;
        }
        Plan { rate: 1.0, weights, limit: Some(count), ..Plan::none() }
    }

    /// The same plan, faulting only `operation` (e.g. `SendCommand`).
    pub fn only(self, operation: &str) -> Self {
        Plan { operations: Some(vec![operation.to_owned()]), ..self }
    }

    /// `rate` of faultable requests faulted, with the default mix, from `seed`.
    pub fn at(rate: f64, seed: u64) -> Self {
        Plan { rate, seed, ..Plan::none() }
    }

    /// The fault for faultable request number `n`, if any.
    pub fn decide(&self, n: u64) -> Option<Fault> {
        let h = mix(self.seed ^ mix(n));
        if unit(h) >= self.rate {
            return None;
        }
        let total: u32 = self.weights.iter().sum();
        if total == 0 {
            return None;
        }
        let mut pick = (mix(h) % u64::from(total)) as u32;
        for (fault, w) in Fault::ALL.iter().zip(self.weights) {
            if pick < w {
                return Some(*fault);
            }
            pick -= w;
        }
        None
    }
}

/// splitmix64's finalizer: a well-mixed 64-bit hash.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash as a number in `[0, 1)`.
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The faultable request's sequence number.
    pub n: u64,
    /// The caller's access key.
    pub key: String,
    /// `ssm`, `dynamodb`, ...
    pub service: String,
    /// `SendCommand`, `UpdateItem`, ... (S3: the HTTP method).
    pub operation: String,
    /// What was injected.
    pub fault: Fault,
}

struct State {
    upstream: String,
    plan: Mutex<Plan>,
    counter: AtomicU64,
    faulted: Mutex<BTreeSet<String>>,
    killers: Mutex<HashMap<String, Killer>>,
    injections: Mutex<Vec<Injection>>,
    /// How many injections preceded the current plan (its `limit` counts from there).
    plan_base: AtomicU64,
    /// Time with at least one request of a caller key waiting on the
    /// upstream (concurrent calls count once), by key: benchmarks take it out
    /// of a function's invocation time.
    upstream_time: Mutex<HashMap<String, Busy>>,
}

/// The union of a caller's requests' time at the upstream.
#[derive(Debug, Default)]
struct Busy {
    in_flight: u32,
    since: Option<std::time::Instant>,
    total: Duration,
}

impl Busy {
    fn begin(&mut self) {
        if self.in_flight == 0 {
            self.since = Some(std::time::Instant::now());
        }
        self.in_flight += 1;
    }

    fn end(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0
            && let Some(since) = self.since.take()
        {
            self.total += since.elapsed();
        }
    }
}

/// The proxy, listening on loopback until dropped.
pub struct FaultProxy {
    url: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`http://127.0.0.1:PORT`) that injects
    /// nothing until told whom to fault and how.
    pub async fn start(upstream: &str) -> FaultProxy {
        let state = Arc::new(State {
            upstream: upstream.trim_start_matches("http://").trim_end_matches('/').to_owned(),
            plan: Mutex::new(Plan::none()),
            counter: AtomicU64::new(0),
            faulted: Mutex::new(BTreeSet::new()),
            killers: Mutex::new(HashMap::new()),
            injections: Mutex::new(Vec::new()),
            plan_base: AtomicU64::new(0),
            upstream_time: Mutex::new(HashMap::new()),
        });
        let (addr, task) = crate::http::serve(state.clone(), handle).await;
        FaultProxy { url: format!("http://{addr}"), state, task }
    }

    /// Its URL, for [`crate::Emulator::behind`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Faults requests signed with `key` from now on; `killer` (if any) is
    /// what a `Kill` fault uses.
    pub fn fault(&self, key: &str, killer: Option<Killer>) {
        if let Ok(mut f) = self.state.faulted.lock() {
            f.insert(key.to_owned());
        }
        if let (Some(k), Ok(mut killers)) = (killer, self.state.killers.lock()) {
            killers.insert(key.to_owned(), k);
        }
    }

    /// Replaces the plan (the sequence numbers go on).
    pub fn set_plan(&self, plan: Plan) {
        if let Ok(mut p) = self.state.plan.lock() {
            let base = self.state.injections.lock().map(|i| i.len() as u64).unwrap_or(0);
            self.state.plan_base.store(base, Ordering::SeqCst);
            *p = plan;
        }
    }

    /// Stops injecting (the plan's rate becomes 0).
    pub fn heal(&self) {
        if let Ok(mut p) = self.state.plan.lock() {
            p.rate = 0.0;
        }
    }

    /// Every fault injected so far.
    pub fn injections(&self) -> Vec<Injection> {
        self.state.injections.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// Injected faults by kind.
    pub fn counts(&self) -> BTreeMap<Fault, u64> {
        let mut out = BTreeMap::new();
        for i in self.injections() {
            *out.entry(i.fault).or_default() += 1;
        }
        out
    }

    /// Time the upstream took to answer requests signed with `key`, in all.
    pub fn upstream_time(&self, key: &str) -> Duration {
        self.state.upstream_time.lock().ok().and_then(|u| u.get(key).map(|b| b.total)).unwrap_or_default()
    }

    /// Faultable requests seen so far.
    pub fn requests(&self) -> u64 {
        self.state.counter.load(Ordering::SeqCst)
    }
}

/// What a request is, from its signature and shape.
struct Call {
    key: String,
    service: String,
    operation: String,
    protocol: Protocol,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// awsJson 1.0/1.1 (SSM, DynamoDB): `X-Amz-Target`.
    Json,
    /// EC2's query protocol.
    Ec2,
    /// awsQuery (Auto Scaling, ELBv2).
    Query,
    /// restXml (S3).
    RestXml,
    /// restJson1 (EFS): the error type in `x-amzn-ErrorType`, a JSON body.
    RestJson,
}

fn classify(req: &hyper::http::request::Parts, body: &[u8]) -> Call {
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    // `AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, ...`
    let auth = header("authorization");
    let scope: Vec<&str> =
        auth.split("Credential=").nth(1).and_then(|c| c.split([',', ' ']).next()).unwrap_or("").split('/').collect();
    let key = scope.first().copied().unwrap_or_default().to_owned();
    let service = scope.get(3).copied().unwrap_or_default().to_owned();
    let target = header("x-amz-target");
    let form = || {
        String::from_utf8_lossy(body)
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action=").map(str::to_owned))
            .unwrap_or_default()
    };
    let (operation, protocol) = if !target.is_empty() {
        (target.rsplit('.').next().unwrap_or_default().to_owned(), Protocol::Json)
    } else if service == "ec2" {
        (form(), Protocol::Ec2)
    } else if service == "s3" {
        (req.method.to_string(), Protocol::RestXml)
    } else if service == "elasticfilesystem" {
        (format!("{} {}", req.method, req.uri.path()), Protocol::RestJson)
    } else {
        (form(), Protocol::Query)
    };
    Call { key, service, operation, protocol }
}

type Answer = Result<Response<Full<Bytes>>, std::io::Error>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let call = classify(&parts, &body);
    let faultable = state.faulted.lock().map(|f| f.contains(&call.key)).unwrap_or(false);
    let fault = if faultable {
        let n = state.counter.fetch_add(1, Ordering::SeqCst);
        let plan = state.plan.lock().map(|p| p.clone()).unwrap_or_else(|_| Plan::none());
        let injected =
            state.injections.lock().map(|i| i.len() as u64).unwrap_or(0) - state.plan_base.load(Ordering::SeqCst);
        let chosen = plan.operations.as_ref().is_none_or(|ops| ops.contains(&call.operation));
        if !chosen || plan.limit.is_some_and(|limit| injected >= limit) {
            None
        } else {
            plan.decide(n).map(|f| (n, f, plan))
        }
    } else {
        None
    };
    let Some((n, mut fault, plan)) = fault else {
        if let Ok(mut u) = state.upstream_time.lock() {
            u.entry(call.key.clone()).or_default().begin();
        }
        let answer = forward(&state, parts, body).await;
        if let Ok(mut u) = state.upstream_time.lock() {
            u.entry(call.key).or_default().end();
        }
        return answer;
    };
    let killer = state.killers.lock().ok().and_then(|k| k.get(&call.key).cloned());
    if fault == Fault::Kill && killer.is_none() {
        fault = Fault::DropAfter;
    }
    if let Ok(mut log) = state.injections.lock() {
        log.push(Injection {
            n,
            key: call.key.clone(),
            service: call.service.clone(),
            operation: call.operation.clone(),
            fault,
        });
    }
    let bit = mix(plan.seed ^ mix(n) ^ 0x5EED) & 1 == 1;
    match fault {
        Fault::Throttle => Ok(throttle(&call, bit)),
        Fault::ServerError => Ok(server_error(&call, bit)),
        Fault::DropBefore => Err(dropped()),
        Fault::DropAfter => {
            let _ = forward(&state, parts, body).await;
            Err(dropped())
        }
        Fault::Timeout => {
            let _ = forward(&state, parts, body).await;
            tokio::time::sleep(plan.hold).await;
            Err(dropped())
        }
        Fault::Kill => {
            // Half the kills land before the call is served, half after.
            if bit {
                let _ = forward(&state, parts, body).await;
            }
            if let Some(k) = killer {
                k.kill();
            }
            Err(dropped())
        }
    }
}

fn dropped() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "fault proxy: connection dropped")
}

async fn forward(state: &State, parts: hyper::http::request::Parts, body: Bytes) -> Answer {
    let stream = TcpStream::connect(&state.upstream).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let mut req = Request::from_parts(parts, Full::new(body));
    // The emulator sees the request as the caller sent it, minus hop-by-hop headers.
    req.headers_mut().remove("connection");
    let resp = sender.send_request(req).await.map_err(std::io::Error::other)?;
    let (mut parts, body) = resp.into_parts();
    let bytes = body.collect().await.map_err(std::io::Error::other)?.to_bytes();
    parts.headers.remove("transfer-encoding");
    parts.headers.remove("connection");
    if let Ok(len) = HeaderValue::from_str(&bytes.len().to_string()) {
        parts.headers.insert("content-length", len);
    }
    Ok(Response::from_parts(parts, Full::new(bytes)))
}

fn respond(status: StatusCode, content_type: &str, error_type: Option<&str>, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert("content-type", HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("text/xml")));
    headers.insert("x-amzn-requestid", HeaderValue::from_static("fault-proxy-0000"));
    if let Some(t) = error_type.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert("x-amzn-errortype", t);
    }
    r
}

/// An error in `call`'s protocol.
fn error(call: &Call, status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    match call.protocol {
        Protocol::Json => respond(
            status,
            "application/x-amz-json-1.1",
            Some(code),
            format!(r#"{{"__type":"{code}","message":"{message}"}}"#),
        ),
        Protocol::Ec2 => respond(
            status,
            "text/xml",
            None,
            format!(
                "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>fault-proxy-0000</RequestID></Response>"
            ),
        ),
        Protocol::Query => {
            let kind = if status.is_server_error() { "Receiver" } else { "Sender" };
            respond(
                status,
                "text/xml",
                None,
                format!(
                    "<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault-proxy-0000</RequestId></ErrorResponse>"
                ),
            )
        }
        Protocol::RestJson => respond(
            status,
            "application/json",
            Some(code),
            format!(r#"{{"ErrorCode":"{code}","Message":"{message}"}}"#),
        ),
        Protocol::RestXml => respond(
            status,
            "application/xml",
            None,
            format!(
                "<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy-0000</RequestId></Error>"
            ),
        ),
    }
}

/// The service's throttling error (`alt`: the other documented form).
fn throttle(call: &Call, alt: bool) -> Response<Full<Bytes>> {
    match (call.protocol, call.service.as_str()) {
        (Protocol::Json, "dynamodb") if alt => error(
            call,
            StatusCode::BAD_REQUEST,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded.",
        ),
        (Protocol::Json, _) if alt => {
            error(call, StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", "Rate exceeded")
        }
        (Protocol::Json, _) => error(call, StatusCode::BAD_REQUEST, "ThrottlingException", "Rate exceeded"),
        // EFS API reference: ThrottlingException, HTTP 429.
        (Protocol::RestJson, _) => error(call, StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", "Rate exceeded"),
        (Protocol::Ec2, _) => {
            error(call, StatusCode::SERVICE_UNAVAILABLE, "RequestLimitExceeded", "Request limit exceeded.")
        }
        (Protocol::Query, _) => error(call, StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded"),
        (Protocol::RestXml, _) => {
            error(call, StatusCode::SERVICE_UNAVAILABLE, "SlowDown", "Please reduce your request rate.")
        }
    }
}

/// A 500 (or, `alt`, a 503) in the service's words.
fn server_error(call: &Call, alt: bool) -> Response<Full<Bytes>> {
    let code = match (call.protocol, alt) {
        (_, true) => "ServiceUnavailable",
        (Protocol::Json | Protocol::RestJson, false) => "InternalServerError",
        (Protocol::Query, false) => "InternalFailure",
        (Protocol::Ec2 | Protocol::RestXml, false) => "InternalError",
    };
    let status = if alt { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::INTERNAL_SERVER_ERROR };
    error(call, status, code, "We encountered an internal error. Please try again.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_faults_about_its_rate_with_every_kind() {
        let plan = Plan::at(0.2, 7);
        let decided: Vec<Option<Fault>> = (0..10_000).map(|n| plan.decide(n)).collect();
        let faulted = decided.iter().flatten().count();
        assert!((1_800..2_200).contains(&faulted), "{faulted}");
        for kind in Fault::ALL {
            assert!(decided.contains(&Some(kind)), "{kind:?} never chosen");
        }
        assert_eq!(decided, (0..10_000).map(|n| plan.decide(n)).collect::<Vec<_>>(), "same seed, same faults");
        assert_ne!(decided, (0..10_000).map(|n| Plan::at(0.2, 8).decide(n)).collect::<Vec<_>>());
        assert!((0..1_000).all(|n| Plan::at(0.0, 7).decide(n).is_none()));
        assert!((0..1_000).all(|n| Plan::at(1.0, 7).decide(n).is_some()));
    }
}
