//! The event router: delivers what AWS would, to the functions as deployed.
//!
//! moto emits no events to Lambda. The router reads what the patched
//! emulator recorded, as AWS would have sent it, and delivers it through the
//! wiring of `infra/template.yaml`:
//!
//! | source | rule (what is routed) | delivered to, how |
//! |---|---|---|
//! | lifecycle actions of the managed groups | EventBridge, `aws.autoscaling` lifecycle actions | `lifecycle-hook`, async |
//! | Run Command status changes of the sync document, terminal statuses | EventBridge, `aws.ssm` command status | `sync-completion` and `lifecycle-hook`, async |
//! | S3 object events of the codebase bucket under its prefix | EventBridge -> SQS queue | `codebase-sync`, SQS batches |
//! | schedules | EventBridge schedule | `lifecycle-hook`, `mount-targets`, `sync-completion`, async |
//! | the re-trigger queue (`FLEET_RETRIGGER_QUEUE_URL`), messages due on the test clock | SQS event source mapping | `lifecycle-hook`, SQS batches |
//!
//! Delivery follows Lambda's rules: an async invocation that fails is
//! retried twice (here: on the next rounds), then lands in the on-failure
//! destination; an SQS batch that fails returns to the queue (only the
//! messages a `batchItemFailures` response names, when it names any) and a
//! message received `max_receive` times goes to the dead-letter queue.
//! Targets are real bootstraps ([`LambdaProcess`]) or in-process handlers.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;

use fleetkeeper::Component;
use hyper::Method;
use serde_json::{Value, json};

use crate::Emulator;
use crate::emulator::Caller;
use crate::fleet::Fleet;
use crate::runtime::{LambdaProcess, Outcome};

/// What an invocation answered: the response, or the function error.
pub type Reply = Result<Value, String>;

/// A function to deliver to.
pub trait Target: Send {
    /// Invokes it with `payload`.
    fn invoke(&mut self, payload: Value) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>>;
}

impl Target for LambdaProcess {
    fn invoke(&mut self, payload: Value) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>> {
        Box::pin(async move {
            match LambdaProcess::invoke(self, payload).await {
                Outcome::Response(v) => Ok(v),
                Outcome::Error { error_type, error_message } => Err(format!("{error_type}: {error_message}")),
            }
        })
    }
}

/// An invocation in flight.
pub type Invocation = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// An in-process handler as a target.
pub struct InProcess(pub Box<dyn FnMut(Value) -> Invocation + Send>);

impl Target for InProcess {
    fn invoke(&mut self, payload: Value) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>> {
        (self.0)(payload)
    }
}

/// How an event reached a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// An async invocation (EventBridge rule or schedule).
    Async,
    /// An SQS event source mapping batch.
    Sqs,
}

/// One invocation the router made.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// To whom.
    pub to: Component,
    /// How.
    pub path: Path,
    /// What it carried (`lifecycle`, `command status`, `s3 batch of N`, `schedule`).
    pub what: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// What the function answered.
    pub reply: Reply,
}

struct AsyncEvent {
    to: Component,
    what: String,
    payload: Value,
    attempt: u32,
}

struct Message {
    id: String,
    body: Value,
    receives: u32,
}

/// Terminal statuses the command-status rule matches (the others would only
/// wake the functions for nothing).
pub const TERMINAL_STATUSES: [&str; 4] = ["Success", "Failed", "TimedOut", "Cancelled"];

/// The event router of one fleet.
pub struct Router {
    emulator: Emulator,
    fleet: Fleet,
    targets: BTreeMap<Component, Box<dyn Target>>,
    lifecycle_next: u64,
    s3_next: u64,
    ssm_next: u64,
    retries: VecDeque<AsyncEvent>,
    queue: VecDeque<Message>,
    /// Messages `codebase-sync` never took (after `max_receive` receives).
    pub dead_letters: Vec<Value>,
    /// Async events that failed every attempt (the on-failure destination).
    pub failed_async: Vec<Value>,
    /// Every delivery, in order.
    pub log: Vec<Delivery>,
    /// The SQS batch size (the event source mapping's `BatchSize`).
    pub batch_size: usize,
    /// The queue's `maxReceiveCount`.
    pub max_receive: u32,
    /// Lose S3 events (a test of the backstop): read, never delivered.
    pub drop_s3_events: bool,
    /// Lose this share of the lifecycle, S3 and command status events
    /// (EventBridge delivery is best-effort), decided from `loss_seed`.
    pub loss: f64,
    /// The seed of the losses.
    pub loss_seed: u64,
    /// Events lost so far (by `drop_s3_events` or `loss`).
    pub lost: usize,
    message_seq: u64,
    event_seq: u64,
    sqs: aws_sdk_sqs::Client,
}

impl Router {
    /// The router of `fleet`: enables EventBridge notifications on its
    /// codebase bucket (the one-time step of a deployment; objects uploaded
    /// before it send no event, the first sweep finds them). Lifecycle
    /// events from the fleet's launch are delivered too: a deployment creates
    /// the rules before the hooks.
    pub async fn new(emulator: &Emulator, fleet: &Fleet) -> Router {
        let s3 = aws_sdk_s3::Client::new(&emulator.sdk_config_as(Caller::Router).await);
        s3.put_bucket_notification_configuration()
            .bucket(&fleet.bucket)
            .notification_configuration(
                aws_sdk_s3::types::NotificationConfiguration::builder()
                    .event_bridge_configuration(aws_sdk_s3::types::EventBridgeConfiguration::builder().build())
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("enable EventBridge on {}: {e:?}", fleet.bucket));
        Router {
            emulator: emulator.clone(),
            fleet: fleet.clone(),
            targets: BTreeMap::new(),
            lifecycle_next: 0,
            s3_next: 0,
            ssm_next: 0,
            retries: VecDeque::new(),
            queue: VecDeque::new(),
            dead_letters: Vec::new(),
            failed_async: Vec::new(),
            log: Vec::new(),
            batch_size: 10,
            max_receive: 5,
            drop_s3_events: false,
            loss: 0.0,
            loss_seed: 0,
            lost: 0,
            message_seq: 0,
            event_seq: 0,
            sqs: aws_sdk_sqs::Client::new(&emulator.sdk_config_as(Caller::Router).await),
        }
    }

    /// Delivers to `component` through `target` from now on.
    pub fn route(&mut self, component: Component, target: impl Target + 'static) {
        self.targets.insert(component, Box::new(target));
    }

    /// Stops routing to `component`, handing back its target.
    pub fn unroute(&mut self, component: Component) -> Option<Box<dyn Target>> {
        self.targets.remove(&component)
    }

    /// Whether the next S3 or status event is lost.
    fn loses(&mut self) -> bool {
        self.event_seq += 1;
        let h = crate::faults::mix(self.loss_seed ^ crate::faults::mix(self.event_seq));
        let lost = crate::faults::unit(h) < self.loss;
        self.lost += usize::from(lost);
        lost
    }

    async fn read(&self, path: &str, after: u64) -> (Vec<Value>, u64) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let v = self.emulator.control(Method::GET, &format!("{path}{sep}after={after}"), None).await;
        (v["events"].as_array().cloned().unwrap_or_default(), v["next"].as_u64().unwrap_or(after))
    }

    /// One round: reads every new event, delivers it (and the retries due),
    /// and the S3 events waiting in the queue, in batches. Returns this
    /// round's deliveries.
    pub async fn pump(&mut self) -> Vec<Delivery> {
        let mut due: Vec<AsyncEvent> = self.retries.drain(..).collect();
        let (events, next) = self.read("autoscaling/lifecycle-events", self.lifecycle_next).await;
        self.lifecycle_next = next;
        for e in events {
            let group = e["detail"]["AutoScalingGroupName"].as_str().unwrap_or_default();
            if group == self.fleet.asg_name && !self.loses() {
                due.push(AsyncEvent { to: Component::LifecycleHook, what: "lifecycle".into(), payload: e, attempt: 1 });
            }
        }
        let (events, next) = self.read("ssm/status-events", self.ssm_next).await;
        self.ssm_next = next;
        for e in events {
            let d = &e["detail"];
            let ours = e["detail-type"] == "EC2 Command Status-change Notification"
                && d["document-name"] == self.fleet.document.as_str()
                && TERMINAL_STATUSES.contains(&d["status"].as_str().unwrap_or_default());
            if ours && !self.loses() {
                for to in [Component::SyncCompletion, Component::LifecycleHook] {
                    due.push(AsyncEvent { to, what: "command status".into(), payload: e.clone(), attempt: 1 });
                }
            }
        }
        let (events, next) = self.read(&format!("s3/events?bucket={}", self.fleet.bucket), self.s3_next).await;
        self.s3_next = next;
        for e in events {
            if self.drop_s3_events {
                self.lost += 1;
                continue;
            }
            if e["detail"]["object"]["key"].as_str().unwrap_or_default().starts_with(self.fleet.prefix.as_str())
                && !self.loses()
            {
                self.message_seq += 1;
                self.queue.push_back(Message { id: format!("msg-{}", self.message_seq), body: e, receives: 0 });
            }
        }
        let mut out = Vec::new();
        for event in due {
            out.extend(self.deliver_async(event).await);
        }
        out.extend(self.deliver_queue().await);
        let lifecycle = self.fleet.retrigger_queue_url.clone();
        out.extend(self.deliver_retriggers(Component::LifecycleHook, &lifecycle).await);
        let sync = self.fleet.sync_queue_url.clone();
        out.extend(self.deliver_retriggers(Component::CodebaseSync, &sync).await);
        self.log.extend(out.iter().cloned());
        out
    }

    /// The re-trigger messages that are due (SQS delays them on the test
    /// clock), as the event source mapping delivers them: a batch of up to
    /// 10; a message the reply names in `batchItemFailures` (or every one,
    /// on a function error) stays for redelivery, the others are deleted.
    async fn deliver_retriggers(&mut self, to: Component, url: &str) -> Vec<Delivery> {
        if !self.targets.contains_key(&to) {
            return Vec::new();
        }
        let received = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(720)
            .send()
            .await
            .unwrap_or_else(|e| panic!("receive from {url}: {e:?}"));
        let queue = url.rsplit('/').next().unwrap_or_default().to_owned();
        let messages = received.messages();
        if messages.is_empty() {
            return Vec::new();
        }
        let account = self.emulator.account().to_owned();
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000",
                        "SenderId": "AROALCHOOK", "ApproximateFirstReceiveTimestamp": "1700000000000"},
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": format!("arn:aws:sqs:us-east-1:{account}:{queue}"),
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        let what = format!("re-trigger batch of {}", records.len());
        let Some(target) = self.targets.get_mut(&to) else { return Vec::new() };
        let reply = target.invoke(json!({ "Records": records })).await;
        let all: Vec<String> = messages.iter().filter_map(|m| m.message_id().map(str::to_owned)).collect();
        let failed = failed_items(&reply, all);
        for m in messages {
            if m.message_id().is_some_and(|id| failed.iter().any(|f| f == id)) {
                continue;
            }
            if let Some(handle) = m.receipt_handle() {
                self.sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("delete from {url}: {e:?}"));
            }
        }
        vec![Delivery { to, path: Path::Sqs, what, attempt: 1, reply }]
    }

    /// Invokes `component` with `payload` as an operator does (an async
    /// invocation, retried on error like any other).
    pub async fn invoke(&mut self, component: Component, payload: Value) -> Option<Delivery> {
        let event = AsyncEvent { to: component, what: "manual".into(), payload, attempt: 1 };
        let delivery = self.deliver_async(event).await;
        self.log.extend(delivery.iter().cloned());
        delivery
    }

    /// A schedule fires for every scheduled function.
    pub async fn tick(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        for to in [Component::LifecycleHook, Component::MountTargets, Component::SyncCompletion] {
            let payload = crate::events::scheduled();
            out.extend(self.deliver_async(AsyncEvent { to, what: "schedule".into(), payload, attempt: 1 }).await);
        }
        self.log.extend(out.iter().cloned());
        out
    }

    /// Whether anything is waiting (retries, queued upload messages; a
    /// re-trigger waits in SQS until its delay passes on the test clock).
    pub fn idle(&self) -> bool {
        self.retries.is_empty() && self.queue.is_empty()
    }

    async fn deliver_async(&mut self, event: AsyncEvent) -> Option<Delivery> {
        let target = self.targets.get_mut(&event.to)?;
        let reply = target.invoke(event.payload.clone()).await;
        let delivery =
            Delivery { to: event.to, path: Path::Async, what: event.what.clone(), attempt: event.attempt, reply };
        if delivery.reply.is_err() {
            if event.attempt < 3 {
                self.retries.push_back(AsyncEvent { attempt: event.attempt + 1, ..event });
            } else {
                self.failed_async.push(event.payload);
            }
        }
        Some(delivery)
    }

    async fn deliver_queue(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        if !self.targets.contains_key(&Component::CodebaseSync) {
            return out;
        }
        let mut batches = Vec::new();
        while !self.queue.is_empty() {
            let n = self.batch_size.min(self.queue.len());
            batches.push(self.queue.drain(..n).collect::<Vec<_>>());
        }
        for mut batch in batches {
            for m in &mut batch {
                m.receives += 1;
            }
            let records: Vec<Value> = batch.iter().map(|m| self.sqs_record(m)).collect();
            let what = format!("s3 batch of {}", batch.len());
            let Some(target) = self.targets.get_mut(&Component::CodebaseSync) else { break };
            let reply = target.invoke(json!({ "Records": records })).await;
            let failed = failed_items(&reply, batch.iter().map(|m| m.id.clone()).collect());
            for m in batch {
                if !failed.contains(&m.id) {
                    continue;
                }
                if m.receives >= self.max_receive {
                    self.dead_letters.push(m.body);
                } else {
                    self.queue.push_back(m);
                }
            }
            out.push(Delivery { to: Component::CodebaseSync, path: Path::Sqs, what, attempt: 1, reply });
        }
        out
    }

    /// An SQS event source mapping's record for a message whose body is an
    /// EventBridge event (as an EventBridge rule's SQS target sends it).
    fn sqs_record(&self, m: &Message) -> Value {
        let account = self.emulator.account();
        json!({
            "messageId": m.id,
            "receiptHandle": format!("{}-{}", m.id, m.receives),
            "body": m.body.to_string(),
            "attributes": {
                "ApproximateReceiveCount": m.receives.to_string(),
                "SentTimestamp": "1700000000000",
                "SenderId": "AIDAEVENTBRIDGE",
                "ApproximateFirstReceiveTimestamp": "1700000000000"
            },
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": format!("arn:aws:sqs:us-east-1:{account}:{}-codebase-events", self.fleet.name),
            "awsRegion": "us-east-1"
        })
    }
}

/// The messages of an SQS batch that return to the queue: those the reply
/// names in `batchItemFailures`, or `all` on a function error.
fn failed_items(reply: &Reply, all: Vec<String>) -> Vec<String> {
    match reply {
        Err(_) => all,
        Ok(v) => v["batchItemFailures"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
            .collect(),
    }
}
