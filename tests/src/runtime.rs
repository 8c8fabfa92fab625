//! A Lambda Runtime API that runs a function's real `bootstrap` binary.
//!
//! Lambda runs a custom runtime as a process with `AWS_LAMBDA_RUNTIME_API`
//! pointing at an HTTP API: the process long-polls
//! `GET /2018-06-01/runtime/invocation/next` for an event and answers with
//! `POST .../invocation/{id}/response` or `.../error`. This module serves that
//! API on loopback, starts the binary with a clean environment (the function's
//! variables, the emulator's endpoint, nothing inherited), queues events and
//! returns what the function answered. An init failure is the process
//! exiting: [`run_to_exit`] reports its exit code and output.
//!
//! Like Lambda, the harness ends an invocation that outlives its deadline
//! (`Sandbox.Timedout`) and reports a process that dies mid-invocation as
//! `Runtime.ExitError`; either way the next invocation cold-starts a fresh
//! process. A [`Killer`] SIGKILLs the process at a chosen moment (the fault
//! proxy uses it at a chosen AWS call). On a [`TestClock`] the process's wall
//! clock follows the test clock (the clock shim), and deadlines are set on it.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetkeeper::clock::{Clock, SystemClock};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::emulator::TestClock;

/// How long after its deadline an invocation is ended (Lambda ends it at the
/// deadline; the margin absorbs the harness's own scheduling).
const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// What a function answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `POST /invocation/{id}/response`.
    Response(Value),
    /// `POST /invocation/{id}/error`.
    Error {
        /// `errorType`.
        error_type: String,
        /// `errorMessage`.
        error_message: String,
    },
}

impl Outcome {
    /// The response, or a panic naming the error.
    pub fn response(self) -> Value {
        match self {
            Outcome::Response(v) => v,
            Outcome::Error { error_type, error_message } => {
                panic!("function failed: {error_type}: {error_message}")
            }
        }
    }
}

struct Pending {
    request_id: String,
    event: Value,
    deadline_ms: u64,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct ApiState {
    queue: Mutex<VecDeque<Pending>>,
    arrived: Notify,
    inflight: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<String>>,
    function_name: String,
}

/// A running function process behind its own Runtime API.
pub struct LambdaProcess {
    name: String,
    env: Vec<(String, String)>,
    addr: String,
    /// `None` after the process died or timed out: the next invocation cold-starts one.
    child: Option<Child>,
    api: Arc<ApiState>,
    server: JoinHandle<()>,
    output: Output,
    clock: Option<TestClock>,
    pid: Arc<AtomicU32>,
    killed: Arc<AtomicBool>,
    cold_starts: Arc<AtomicU32>,
}

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        // The child is killed on drop (`kill_on_drop`); the API goes with it.
        self.server.abort();
    }
}

/// SIGKILLs a [`LambdaProcess`]'s current process, from anywhere.
#[derive(Debug, Clone)]
pub struct Killer {
    pid: Arc<AtomicU32>,
    killed: Arc<AtomicBool>,
}

impl Killer {
    /// Sends SIGKILL now (nothing when no process runs).
    pub fn kill(&self) {
        let pid = self.pid.load(Ordering::SeqCst);
        if pid != 0 {
            self.killed.store(true, Ordering::SeqCst);
            // SAFETY: kill(2) with a pid this harness started; no memory involved.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// What a process printed, captured as it runs.
#[derive(Debug, Clone, Default)]
pub struct Output {
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Output {
    /// Everything printed on stdout so far (the function's logs).
    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// How a process ended, for init failures.
#[derive(Debug, Clone)]
pub struct Exit {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
    /// What the process reported to `/runtime/init/error`, if anything.
    pub init_error: Option<String>,
}

/// The path of a workspace binary (`lifecycle-hook`, `codebase-sync`, ...),
/// next to the running test or demo binary, or under `FLEETKEEPER_BIN_DIR`.
pub fn binary_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("FLEETKEEPER_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
            let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} does not exist: build the functions first (`cargo build --workspace --all-targets`)",
        path.display()
    );
    path
}

impl LambdaProcess {
    /// Starts `binary` (a workspace binary name) with `env` on top of the
    /// variables Lambda itself sets.
    pub async fn start(binary: &str, env: &[(String, String)]) -> Self {
        Self::start_on(binary, env, None).await
    }

    async fn start_on(binary: &str, env: &[(String, String)], clock: Option<TestClock>) -> Self {
        let (api, server, addr) = serve(binary).await;
        let mut env = env.to_vec();
        env.extend(clock.iter().flat_map(TestClock::process_env));
        let output = Output::default();
        let child = spawn(binary, &env, &addr, &output);
        let pid = Arc::new(AtomicU32::new(child.id().unwrap_or(0)));
        LambdaProcess {
            name: binary.to_owned(),
            env,
            addr,
            child: Some(child),
            api,
            server,
            output,
            clock,
            pid,
            killed: Arc::new(AtomicBool::new(false)),
            cold_starts: Arc::new(AtomicU32::new(1)),
        }
    }

    /// Starts function `component` with the fleet environment `env`, reaching
    /// `emulator`'s account with the function's own access key.
    pub async fn start_function(
        emulator: &crate::Emulator,
        component: fleetkeeper::Component,
        env: &[(String, String)],
    ) -> Self {
        let mut env = env.to_vec();
        env.extend(emulator.aws_env_for(component));
        Self::start(component.name(), &env).await
    }

    /// The same, the process's wall clock and its deadlines on `clock`.
    /// `env` is complete (the caller adds [`crate::Emulator::aws_env_for`]).
    pub async fn start_on_clock(
        component: fleetkeeper::Component,
        env: &[(String, String)],
        clock: &TestClock,
    ) -> Self {
        Self::start_on(component.name(), env, Some(clock.clone())).await
    }

    /// A handle that SIGKILLs whichever process currently serves the function.
    pub fn killer(&self) -> Killer {
        Killer { pid: self.pid.clone(), killed: self.killed.clone() }
    }

    /// Processes started so far (the first one included).
    pub fn cold_starts(&self) -> u32 {
        self.cold_starts.load(Ordering::SeqCst)
    }

    /// The same count, readable after the process was handed to a router.
    pub fn cold_start_counter(&self) -> Arc<AtomicU32> {
        self.cold_starts.clone()
    }

    /// Invokes the function with a 60 s deadline.
    pub async fn invoke(&mut self, event: Value) -> Outcome {
        self.invoke_with_deadline(event, Duration::from_secs(60)).await
    }

    fn now_ms(&self) -> u64 {
        match &self.clock {
            Some(clock) => clock.now_ms(),
            None => SystemClock.now_ms(),
        }
    }

    /// Invokes the function; its context's deadline is now + `deadline`
    /// (on the process's clock). Lambda's endings: past the deadline the
    /// process is stopped (`Sandbox.Timedout`); a process that dies answers
    /// `Runtime.ExitError`; the next invocation starts a new process.
    pub async fn invoke_with_deadline(&mut self, event: Value, deadline: Duration) -> Outcome {
        if self.child.is_none() {
            let child = spawn(&self.name, &self.env, &self.addr, &self.output);
            self.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
            self.killed.store(false, Ordering::SeqCst);
            self.child = Some(child);
            self.cold_starts.fetch_add(1, Ordering::SeqCst);
        }
        let (reply, answer) = oneshot::channel();
        let request_id = uuid::Uuid::new_v4().to_string();
        let pending = Pending {
            request_id: request_id.clone(),
            event,
            deadline_ms: self.now_ms() + deadline.as_millis() as u64,
            reply,
        };
        if let Ok(mut q) = self.api.queue.lock() {
            q.push_back(pending);
        }
        self.api.arrived.notify_one();
        let Some(child) = self.child.as_mut() else { unreachable!("started above") };
        let outcome = tokio::select! {
            outcome = answer => Ok(outcome.unwrap_or_else(|_| panic!("{}: the runtime API dropped the invocation", self.name))),
            status = child.wait() => Err(Outcome::Error {
                error_type: "Runtime.ExitError".into(),
                error_message: format!(
                    "RequestId: {request_id} Error: Runtime exited with error: {}{}",
                    status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                    if self.killed.load(Ordering::SeqCst) { " (killed by the harness)" } else { "" },
                ),
            }),
            _ = tokio::time::sleep(deadline + DEADLINE_GRACE) => {
                let _ = child.kill().await;
                Err(Outcome::Error {
                    error_type: "Sandbox.Timedout".into(),
                    error_message: format!("RequestId: {request_id} Error: Task timed out after {:.2} seconds", deadline.as_secs_f64()),
                })
            }
        };
        match outcome {
            Ok(answered) => answered,
            Err(ended) => {
                // The sandbox is gone: a fresh process serves the next invocation.
                self.child = None;
                self.pid.store(0, Ordering::SeqCst);
                if let Ok(mut q) = self.api.queue.lock() {
                    q.retain(|p| p.request_id != request_id);
                }
                if let Ok(mut m) = self.api.inflight.lock() {
                    m.remove(&request_id);
                }
                ended
            }
        }
    }

    /// What the process printed so far.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// Stops the process.
    pub async fn stop(mut self) -> Output {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill().await;
        }
        self.server.abort();
        self.output.clone()
    }
}

/// Runs `binary` until it exits (an init failure) or `timeout` passes
/// (panics then: a process that should have failed kept running).
pub async fn run_to_exit(binary: &str, env: &[(String, String)], timeout: Duration) -> Exit {
    let (api, server, addr) = serve(binary).await;
    let output = Output::default();
    let mut child = spawn(binary, env, &addr, &output);
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.unwrap_or_else(|e| panic!("{binary}: wait: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            panic!("{binary} was expected to exit but kept running.\nstdout:\n{}", output.stdout());
        }
    };
    // The readers end when the pipes close: wait for them, not for a delay.
    for reader in output.readers.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default() {
        let _ = reader.await;
    }
    server.abort();
    let init_error = api.init_error.lock().ok().and_then(|e| e.clone());
    Exit { code: status.code(), stdout: output.stdout(), stderr: output.stderr(), init_error }
}

/// Starts a process of `binary`; what it prints is appended to `output`.
fn spawn(binary: &str, env: &[(String, String)], addr: &str, output: &Output) -> Child {
    let mut cmd = Command::new(binary_path(binary));
    // A clean environment: what Lambda sets, what the caller gives, nothing
    // inherited (a developer's real AWS credentials must never leak in).
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", binary)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{binary}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "harness")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(capture(out, output.stdout.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(capture(err, output.stderr.clone())));
    }
    if let Ok(mut r) = output.readers.lock() {
        r.extend(readers);
    }
    child
}

async fn capture(stream: impl AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(mut s) = into.lock() {
            s.push_str(&line);
            s.push('\n');
        }
    }
}

async fn serve(function_name: &str) -> (Arc<ApiState>, JoinHandle<()>, String) {
    let api = Arc::new(ApiState { function_name: function_name.to_owned(), ..ApiState::default() });
    let (addr, server) = crate::http::serve(api.clone(), route).await;
    (api, server, addr)
}

async fn route(state: Arc<ApiState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let rest = path.strip_prefix("/2018-06-01/runtime/").unwrap_or("");
    let parts: Vec<&str> = rest.split('/').collect();
    let response = match (method, parts.as_slice()) {
        (Method::GET, ["invocation", "next"]) => next(&state).await,
        (Method::POST, ["invocation", id, kind @ ("response" | "error")]) => {
            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let sender = state.inflight.lock().ok().and_then(|mut m| m.remove(*id));
            match sender {
                Some(sender) => {
                    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let outcome = if *kind == "response" {
                        Outcome::Response(value)
                    } else {
                        Outcome::Error {
                            error_type: value["errorType"].as_str().unwrap_or_default().to_owned(),
                            error_message: value["errorMessage"].as_str().unwrap_or_default().to_owned(),
                        }
                    };
                    let _ = sender.send(outcome);
                    reply(StatusCode::ACCEPTED, "{\"status\":\"OK\"}".into())
                }
                None => reply(StatusCode::BAD_REQUEST, "{\"errorType\":\"InvalidRequestID\"}".into()),
            }
        }
        (Method::POST, ["init", "error"]) => {
            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            if let Ok(mut e) = state.init_error.lock() {
                *e = Some(String::from_utf8_lossy(&body).into_owned());
            }
            reply(StatusCode::ACCEPTED, "{\"status\":\"OK\"}".into())
        }
        _ => reply(StatusCode::NOT_FOUND, "{\"errorType\":\"NotFound\"}".into()),
    };
    Ok(response)
}

async fn next(state: &ApiState) -> Response<Full<Bytes>> {
    loop {
        let pending = state.queue.lock().ok().and_then(|mut q| q.pop_front());
        if let Some(p) = pending {
            if let Ok(mut m) = state.inflight.lock() {
                m.insert(p.request_id.clone(), p.reply);
            }
            let arn = format!("arn:aws:lambda:us-east-1:123456789012:function:{}", state.function_name);
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .header("lambda-runtime-aws-request-id", &p.request_id)
                .header("lambda-runtime-deadline-ms", p.deadline_ms.to_string())
                .header("lambda-runtime-invoked-function-arn", arn)
                .header("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000;Sampled=0")
                .body(Full::new(Bytes::from(p.event.to_string())))
                .unwrap_or_else(|_| reply(StatusCode::INTERNAL_SERVER_ERROR, String::new()));
        }
        state.arrived.notified().await;
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}
