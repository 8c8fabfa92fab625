//! A minimal JSON-over-HTTP/1.1 client (the control endpoints are plain
//! HTTP on loopback; the SDK's client is not meant for them), and the
//! loopback server the test doubles (fault proxy, Runtime API) run on.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Serves HTTP/1.1 on a free loopback port, each request to `handle` with
/// `state`, until the returned task is aborted. Returns `host:port`.
pub async fn serve<S, F, Fut, E>(state: Arc<S>, handle: F) -> (String, JoinHandle<()>)
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(state.clone(), req));
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (addr, task)
}

/// Sends one request and returns the status and the JSON body (`Null` when
/// the body is empty or not JSON).
pub async fn request(method: Method, url: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, bytes) = send(method, url, &[("content-type", "application/json")], payload).await?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// Sends a form-encoded POST (an AWS Query-protocol call) with `headers`:
/// the status and the body as text.
pub async fn post_form(url: &str, headers: &[(&str, &str)], form: &str) -> Result<(u16, String), String> {
    let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    let (status, bytes) = send(Method::POST, url, &all, form.to_owned()).await?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: String) -> Result<(u16, Bytes), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let authority = uri.authority().ok_or_else(|| format!("{url}: no host"))?.clone();
    let stream = TcpStream::connect(authority.as_str()).await.map_err(|e| format!("connect {authority}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", authority.as_str());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, bytes))
}
