//! A stopwatch Runtime API for cold starts.
//!
//! The suite's harness (`fleetkeeper_tests::runtime`) is a tokio/hyper
//! server built for behaviour, in a debug binary; its scheduling would add to
//! every measured time. This one is blocking `std` on loopback, one thread
//! per connection, and notes the instant each request arrives: the first
//! `GET /invocation/next` ends init, each `POST .../response` ends an
//! invocation. It serves a fixed list of events, then holds the last
//! `/next` until the process is killed, as Lambda freezes an idle sandbox.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What one cold process did.
#[derive(Debug, Clone)]
pub struct ColdRun {
    /// exec -> the first `GET /invocation/next`.
    pub init: Duration,
    /// exec -> each `POST /invocation/{id}/response` (or `/error`).
    pub responses: Vec<Duration>,
    /// Each answer's body, and whether it was an error.
    pub answers: Vec<(bool, Value)>,
    /// `VmHWM` (peak resident set) after the last answer, KiB.
    pub peak_rss_kib: Option<u64>,
}

#[derive(Default)]
struct Shared {
    events: Vec<Value>,
    served: usize,
    first_next: Option<Instant>,
    responses: Vec<Instant>,
    answers: Vec<(bool, Value)>,
    /// The run is over: the held long poll and the accept loop end.
    done: bool,
}

struct Api {
    state: Mutex<Shared>,
    changed: Condvar,
}

/// Starts `command` (its environment already set, but for the Runtime API's
/// address) under a fresh API, serves `events` one by one, and returns the
/// timings once every event was answered, or an error after `limit`.
pub fn cold_run(command: Command, events: Vec<Value>, limit: Duration) -> Result<ColdRun, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    let want = events.len();
    let api = Arc::new(Api { state: Mutex::new(Shared { events, ..Shared::default() }), changed: Condvar::new() });
    {
        let api = api.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if api.state.lock().map(|s| s.done).unwrap_or(true) {
                    return;
                }
                let api = api.clone();
                std::thread::spawn(move || serve(&api, stream));
            }
        });
    }
    let result = measure(&api, command, addr, want, limit);
    // The end: the held long poll returns, the accept loop wakes and ends.
    if let Ok(mut s) = api.state.lock() {
        s.done = true;
    }
    api.changed.notify_all();
    let _ = TcpStream::connect(addr);
    result
}

fn measure(api: &Api, mut command: Command, addr: SocketAddr, want: usize, limit: Duration) -> Result<ColdRun, String> {
    command
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let start = Instant::now();
    let child = command.spawn().map_err(|e| format!("spawn: {e}"))?;
    let mut child = Killed(child);
    let deadline = start + limit;
    let mut state = api.state.lock().map_err(|_| "poisoned".to_owned())?;
    if want == 0 {
        // Init only: wait for the first /next, then for the process to exit.
        while state.first_next.is_none() && Instant::now() < deadline {
            if let Ok(Some(status)) = child.0.try_wait() {
                return Err(format!("the process exited ({status}) before its first /next"));
            }
            state = api.changed.wait_timeout(state, Duration::from_millis(50)).map_err(|_| "poisoned".to_owned())?.0;
        }
        drop(state);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        state = api.state.lock().map_err(|_| "poisoned".to_owned())?;
    }
    while state.answers.len() < want {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!("{} of {want} answered after {limit:?}", state.answers.len()));
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            return Err(format!("the process exited ({status}) after {} of {want} answers", state.answers.len()));
        }
        let wait = (deadline - now).min(Duration::from_millis(50));
        state = api.changed.wait_timeout(state, wait).map_err(|_| "poisoned".to_owned())?.0;
    }
    let peak_rss_kib = peak_rss(child.0.id());
    let init = state.first_next.map(|t| t - start).ok_or("no /next arrived")?;
    Ok(ColdRun {
        init,
        responses: state.responses.iter().map(|t| *t - start).collect(),
        answers: std::mem::take(&mut state.answers),
        peak_rss_kib,
    })
}

/// Kills the process when dropped (SIGKILL, as Lambda ends a sandbox).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn serve(api: &Api, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    while let Some((method, path, body)) = read_request(&mut reader) {
        let arrived = Instant::now();
        let rest = path.strip_prefix("/2018-06-01/runtime/").unwrap_or("");
        let reply = match (method.as_str(), rest.split('/').collect::<Vec<_>>().as_slice()) {
            ("GET", ["invocation", "next"]) => match next_event(api, arrived) {
                Some((id, event)) => {
                    let body = event.to_string();
                    let deadline = now_ms() + 60_000;
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nlambda-runtime-aws-request-id: {id}\r\n\
                         lambda-runtime-deadline-ms: {deadline}\r\n\
                         lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:bench\r\n\
                         lambda-runtime-trace-id: Root=1-00000000-000000000000000000000000\r\n\
                         content-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                }
                None => return,
            },
            ("POST", ["invocation", _, kind @ ("response" | "error")]) => {
                let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if let Ok(mut s) = api.state.lock() {
                    s.responses.push(arrived);
                    s.answers.push((*kind == "error", value));
                }
                api.changed.notify_all();
                accepted()
            }
            ("POST", ["init", "error"]) => {
                if let Ok(mut s) = api.state.lock() {
                    s.responses.push(arrived);
                    s.answers.push((true, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                }
                api.changed.notify_all();
                accepted()
            }
            _ => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_owned(),
        };
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn accepted() -> String {
    let body = "{\"status\":\"OK\"}";
    format!("HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
}

/// The next event to serve (noting the first `/next`), or `None` once all
/// were served: the caller then holds the connection until the kill.
fn next_event(api: &Api, arrived: Instant) -> Option<(usize, Value)> {
    let mut s = api.state.lock().ok()?;
    s.first_next.get_or_insert(arrived);
    if s.events.is_empty() {
        // Init only: the connection closes, the runtime's loop ends with an
        // error and the process exits on its own (so a profiler can write
        // its report).
        api.changed.notify_all();
        return None;
    }
    if s.served < s.events.len() {
        let i = s.served;
        s.served += 1;
        return Some((i, s.events[i].clone()));
    }
    // Idle: hold the long poll, as Lambda does, until the run is over.
    while !s.done {
        s = api.changed.wait(s).ok()?;
    }
    None
}

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

/// One HTTP/1.1 request: method, path, body (Content-Length or chunked).
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, String, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = value.parse().ok()?;
        } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some((method, path, body))
}
