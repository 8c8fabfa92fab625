//! The Auto Scaling lifecycle API as the gate uses it: the hook's settings,
//! heartbeats (also the "does our hook still hold it" probe) and completion.

use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};
use tracing::info;

use super::gate::{Gate, GateError};
use super::plan::{Completion, HookObs};
use super::store::RecordStore;
use crate::error::AwsError;
use crate::events::LifecycleAction;

/// AWS's default and maximum global timeout: 48 hours.
const MAX_GLOBAL_TIMEOUT_S: i32 = 172_800;

impl<S: RecordStore> Gate<'_, S> {
    /// The hook's global timeout and default result (once per invocation).
    pub(super) async fn hook_settings(&self, group: &str, hook: &str) -> Result<HookObs, GateError> {
        let key = (group.to_owned(), hook.to_owned());
        if let Some(h) = self.cache.hooks.lock().ok().and_then(|c| c.get(&key).copied()) {
            return Ok(h);
        }
        let out = self
            .clients
            .autoscaling
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(group)
            .lifecycle_hook_names(hook)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeLifecycleHooks", e))?;
        let obs = hook_obs(out.lifecycle_hooks().first());
        self.remember_hook(group, hook, obs);
        Ok(obs)
    }

    /// Keeps a hook's settings for the rest of the invocation.
    pub(super) fn remember_hook(&self, group: &str, hook: &str, obs: HookObs) {
        if let Ok(mut c) = self.cache.hooks.lock() {
            c.insert((group.to_owned(), hook.to_owned()), obs);
        }
    }

    /// Heartbeats the action (by token when known, else by instance id);
    /// `false` when the hook holds no such action any more.
    pub(super) async fn heartbeat(&self, action: &LifecycleAction) -> Result<bool, GateError> {
        let mut request = self
            .clients
            .autoscaling
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&action.auto_scaling_group_name)
            .lifecycle_hook_name(&action.lifecycle_hook_name);
        request = match &action.token {
            Some(token) => request.lifecycle_action_token(token),
            None => request.instance_id(&action.instance_id),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if no_active_action(&e) => Ok(false),
            Err(e) => Err(AwsError::from_sdk("RecordLifecycleActionHeartbeat", e).into()),
        }
    }

    /// Completes the action (by token when known, else by instance id);
    /// `false` when it was no longer active: that action is over, and
    /// nothing else is completed in its place.
    pub(super) async fn complete(&self, action: &LifecycleAction, result: Completion) -> Result<bool, GateError> {
        let mut request = self
            .clients
            .autoscaling
            .complete_lifecycle_action()
            .auto_scaling_group_name(&action.auto_scaling_group_name)
            .lifecycle_hook_name(&action.lifecycle_hook_name)
            .lifecycle_action_result(result.as_aws());
        request = match &action.token {
            Some(token) => request.lifecycle_action_token(token),
            None => request.instance_id(&action.instance_id),
        };
        match request.send().await {
            Ok(_) => {
                info!(instance_id = %action.instance_id, result = result.as_aws(), "lifecycle action completed");
                Ok(true)
            }
            Err(e) if no_active_action(&e) => {
                info!(instance_id = %action.instance_id, result = result.as_aws(),
                    "no active lifecycle action: it is over (completed already, or decided by the hook's timeout)");
                Ok(false)
            }
            Err(e) => Err(AwsError::from_sdk("CompleteLifecycleAction", e).into()),
        }
    }
}

/// A hook's timeouts and default result as `DescribeLifecycleHooks` reports
/// them (AWS's defaults for what it leaves out).
pub(super) fn hook_obs(h: Option<&aws_sdk_autoscaling::types::LifecycleHook>) -> HookObs {
    let secs = h.and_then(|h| h.global_timeout()).unwrap_or(MAX_GLOBAL_TIMEOUT_S);
    HookObs {
        global_timeout_ms: u64::try_from(secs).unwrap_or(172_800) * 1000,
        // AWS's default when none was set.
        default_result: match h.and_then(|h| h.default_result()) {
            Some("CONTINUE") => Completion::Continue,
            _ => Completion::Abandon,
        },
    }
}

/// Whether an error is AWS's unmodeled `ValidationError` "No active
/// Lifecycle Action found ..." (matched by code and message: the SDK has no
/// typed variant for it).
pub fn no_active_action<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ValidationError") && e.message().is_some_and(|m| m.contains("No active Lifecycle Action found"))
}
