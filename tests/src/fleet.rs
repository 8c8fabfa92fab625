//! Provisioning a classic web tier in the emulator: a VPC with one subnet per
//! AZ (optionally two in the first AZ), security groups, a launch template, an
//! ALB target group, an Auto Scaling group with fleetkeeper's lifecycle hooks,
//! an EFS file system, the lock table and the codebase bucket. Every name is
//! unique, so tests run side by side without a reset.

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
use aws_sdk_ec2::types::{IpPermission, UserIdGroupPair};
use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetTypeEnum};
use fleetkeeper::Clients;
use fleetkeeper::config::vars;

use crate::emulator::unique;

/// What to provision.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Desired capacity at creation.
    pub instances: i32,
    /// AZs the group spans (1 to 3).
    pub zones: usize,
    /// A second subnet in the first AZ (two subnets, one AZ).
    pub second_subnet_in_first_zone: bool,
    /// Put fleetkeeper's launch hook on the group (before instances launch).
    pub launch_hook: bool,
    /// Put fleetkeeper's terminate hook on the group.
    pub terminate_hook: bool,
    /// Attach the target group to the group (else fleetkeeper registers).
    pub attach_target_group: bool,
    /// The hooks' `HeartbeatTimeout`, seconds (AWS's default: 3600).
    pub heartbeat_timeout: i32,
    /// The target group's `deregistration_delay.timeout_seconds` (AWS's
    /// default is 300; the test fleet's 0, drain tests set their own).
    pub deregistration_delay_s: u32,
    /// A warm pool (`PutWarmPool`, stopped), and whether scale-in returns
    /// instances to it (`ReuseOnScaleIn`).
    pub warm_pool: Option<bool>,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            instances: 2,
            zones: 3,
            second_subnet_in_first_zone: false,
            launch_hook: true,
            terminate_hook: true,
            attach_target_group: false,
            heartbeat_timeout: 3600,
            deregistration_delay_s: 0,
            warm_pool: None,
        }
    }
}

/// A subnet of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// `subnet-...`.
    pub id: String,
    /// `us-east-1a`, ...
    pub zone: String,
}

/// A provisioned web tier.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The fleet name (`FLEET_NAME`).
    pub name: String,
    /// The VPC.
    pub vpc_id: String,
    /// The group's subnets, in `VPCZoneIdentifier` order.
    pub subnets: Vec<Subnet>,
    /// The web servers' security group.
    pub web_security_group: String,
    /// The mount targets' security group (admits TCP 2049 from the web servers).
    pub efs_security_group: String,
    /// The Auto Scaling group.
    pub asg_name: String,
    /// fleetkeeper's launch hook.
    pub launch_hook: String,
    /// fleetkeeper's terminate hook.
    pub terminate_hook: String,
    /// The ALB target group.
    pub target_group_arn: String,
    /// The lifecycle function's re-trigger queue (`FLEET_RETRIGGER_QUEUE_URL`).
    pub retrigger_queue_url: String,
    /// `codebase-sync`'s delayed-start queue (the sync functions'
    /// `FLEET_RETRIGGER_QUEUE_URL`, as the template sets it per function).
    pub sync_queue_url: String,
    /// The EFS file system.
    pub file_system_id: String,
    /// The lock table.
    pub lock_table: String,
    /// The codebase bucket.
    pub bucket: String,
    /// The codebase prefix.
    pub prefix: String,
    /// The sync document's name.
    pub document: String,
    /// The directory on the instances.
    pub destination: String,
}

/// One instance of the group, as Auto Scaling reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `i-...`.
    pub id: String,
    /// `Pending:Wait`, `InService`, ...
    pub lifecycle_state: String,
    /// Its AZ.
    pub zone: String,
}

impl Member {
    fn new(
        id: Option<String>,
        state: Option<&aws_sdk_autoscaling::types::LifecycleState>,
        zone: Option<String>,
    ) -> Self {
        Member {
            id: id.unwrap_or_default(),
            lifecycle_state: state.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            zone: zone.unwrap_or_default(),
        }
    }
}

impl Fleet {
    /// Provisions everything `spec` asks for.
    pub async fn provision(c: &Clients, spec: &FleetSpec) -> Fleet {
        let name = unique("fleet");
        let vpc_id = c
            .ec2
            .create_vpc()
            .cidr_block("10.0.0.0/16")
            .send()
            .await
            .unwrap_or_else(|e| panic!("create_vpc: {e:?}"))
            .vpc
            .and_then(|v| v.vpc_id)
            .unwrap_or_default();
        let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
        let mut subnets = Vec::new();
        let mut plan: Vec<&str> = zones.iter().take(spec.zones.clamp(1, 3)).copied().collect();
        if spec.second_subnet_in_first_zone {
            plan.insert(1, zones[0]);
        }
        for (i, zone) in plan.iter().enumerate() {
            let id = c
                .ec2
                .create_subnet()
                .vpc_id(&vpc_id)
                .cidr_block(format!("10.0.{}.0/20", i * 16))
                .availability_zone(*zone)
                .send()
                .await
                .unwrap_or_else(|e| panic!("create_subnet: {e:?}"))
                .subnet
                .and_then(|s| s.subnet_id)
                .unwrap_or_default();
            subnets.push(Subnet { id, zone: (*zone).to_owned() });
        }
        let web_security_group = security_group(c, &vpc_id, &format!("{name}-web")).await;
        let efs_security_group = security_group(c, &vpc_id, &format!("{name}-efs")).await;
        c.ec2
            .authorize_security_group_ingress()
            .group_id(&efs_security_group)
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(2049)
                    .to_port(2049)
                    .user_id_group_pairs(UserIdGroupPair::builder().group_id(&web_security_group).build())
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("authorize nfs: {e:?}"));

        let template = format!("{name}-lt");
        c.ec2
            .create_launch_template()
            .launch_template_name(&template)
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id("ami-12c6146b")
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .security_group_ids(&web_security_group)
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("create_launch_template: {e:?}"));

        let target_group_arn = c
            .elbv2
            .create_target_group()
            .name(format!("tg-{}", &name[name.len() - 10..]))
            .protocol(ProtocolEnum::Http)
            .port(80)
            .vpc_id(&vpc_id)
            .target_type(TargetTypeEnum::Instance)
            .health_check_path("/health")
            .send()
            .await
            .unwrap_or_else(|e| panic!("create_target_group: {e:?}"))
            .target_groups
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|t| t.target_group_arn)
            .unwrap_or_default();
        c.elbv2
            .modify_target_group_attributes()
            .target_group_arn(&target_group_arn)
            .attributes(
                aws_sdk_elasticloadbalancingv2::types::TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value(spec.deregistration_delay_s.to_string())
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("modify_target_group_attributes: {e:?}"));

        let asg_name = format!("{name}-web");
        let launch_hook = format!("{name}-launch");
        let terminate_hook = format!("{name}-terminate");
        let mut create = c
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(&asg_name)
            .launch_template(LaunchTemplateSpecification::builder().launch_template_name(&template).build())
            .min_size(0)
            .max_size(spec.instances.max(20))
            .desired_capacity(0)
            .vpc_zone_identifier(subnets.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(","));
        if spec.attach_target_group {
            create = create.target_group_arns(&target_group_arn);
        }
        create.send().await.unwrap_or_else(|e| panic!("create_auto_scaling_group: {e:?}"));
        // Hooks before capacity, as a real deployment orders them.
        for (wanted, hook, transition) in [
            (spec.launch_hook, &launch_hook, "autoscaling:EC2_INSTANCE_LAUNCHING"),
            (spec.terminate_hook, &terminate_hook, "autoscaling:EC2_INSTANCE_TERMINATING"),
        ] {
            if wanted {
                c.autoscaling
                    .put_lifecycle_hook()
                    .auto_scaling_group_name(&asg_name)
                    .lifecycle_hook_name(hook)
                    .lifecycle_transition(transition)
                    .heartbeat_timeout(spec.heartbeat_timeout)
                    .default_result("ABANDON")
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("put_lifecycle_hook: {e:?}"));
            }
        }
        if let Some(reuse) = spec.warm_pool {
            c.autoscaling
                .put_warm_pool()
                .auto_scaling_group_name(&asg_name)
                .pool_state(aws_sdk_autoscaling::types::WarmPoolState::Stopped)
                .min_size(0)
                .instance_reuse_policy(
                    aws_sdk_autoscaling::types::InstanceReusePolicy::builder().reuse_on_scale_in(reuse).build(),
                )
                .send()
                .await
                .unwrap_or_else(|e| panic!("put_warm_pool: {e:?}"));
        }
        if spec.instances > 0 {
            c.autoscaling
                .set_desired_capacity()
                .auto_scaling_group_name(&asg_name)
                .desired_capacity(spec.instances)
                .send()
                .await
                .unwrap_or_else(|e| panic!("set_desired_capacity: {e:?}"));
        }

        let file_system_id = c
            .efs
            .create_file_system()
            .creation_token(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create_file_system: {e:?}"))
            .file_system_id;

        let lock_table = lock_table(c, &format!("{name}-locks")).await;

        let queue = |suffix: &str| {
            let name = format!("{name}-{suffix}");
            async move {
                c.sqs
                    .create_queue()
                    .queue_name(name)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("create_queue: {e:?}"))
                    .queue_url
                    .unwrap_or_default()
            }
        };
        let retrigger_queue_url = queue("retrigger").await;
        let sync_queue_url = queue("sync-trigger").await;

        let bucket = name.to_lowercase();
        c.s3.create_bucket().bucket(&bucket).send().await.unwrap_or_else(|e| panic!("create_bucket: {e:?}"));

        Fleet {
            document: format!("{name}-sync"),
            name,
            vpc_id,
            subnets,
            web_security_group,
            efs_security_group,
            asg_name,
            launch_hook,
            terminate_hook,
            target_group_arn,
            retrigger_queue_url,
            sync_queue_url,
            file_system_id,
            lock_table,
            bucket,
            prefix: "app/".to_owned(),
            destination: "/var/www/app".to_owned(),
        }
    }

    /// The environment of `component`: [`Fleet::env`], with the sync
    /// functions' own queue for delayed starts and the quiet period of
    /// `quiet_s` seconds (the template's per-function override).
    pub fn sync_env(&self, component: fleetkeeper::Component, quiet_s: u64) -> Vec<(String, String)> {
        let mut env = self.env();
        env.retain(|(k, _)| k != vars::SYNC_QUIET_SECONDS);
        env.push((vars::SYNC_QUIET_SECONDS.to_owned(), quiet_s.to_string()));
        if matches!(component, fleetkeeper::Component::CodebaseSync | fleetkeeper::Component::SyncCompletion) {
            env.retain(|(k, _)| k != vars::RETRIGGER_QUEUE_URL);
            env.push((vars::RETRIGGER_QUEUE_URL.to_owned(), self.sync_queue_url.clone()));
        }
        env
    }

    /// The fleetkeeper environment of this fleet: every variable of the
    /// configuration contract, so one environment serves every function.
    /// Waves start at once (`FLEET_SYNC_QUIET_SECONDS` 0): the tests of
    /// consistent releases use [`Fleet::sync_env`].
    pub fn env(&self) -> Vec<(String, String)> {
        [
            (vars::FLEET_NAME, self.name.as_str()),
            (vars::ASG_NAMES, self.asg_name.as_str()),
            (vars::LIFECYCLE_HOOK_NAMES, &format!("{},{}", self.launch_hook, self.terminate_hook)),
            (vars::TARGET_GROUP_ARNS, self.target_group_arn.as_str()),
            (vars::EFS_FILE_SYSTEM_ID, self.file_system_id.as_str()),
            (vars::MOUNT_TARGET_SECURITY_GROUPS, self.efs_security_group.as_str()),
            (vars::CODEBASE_BUCKET, self.bucket.as_str()),
            (vars::CODEBASE_PREFIX, self.prefix.as_str()),
            (vars::SYNC_EXCLUDES, "media/*"),
            (vars::SYNC_DESTINATION, self.destination.as_str()),
            (vars::SYNC_DOCUMENT, self.document.as_str()),
            (vars::LOCK_TABLE, self.lock_table.as_str()),
            (vars::RETRIGGER_QUEUE_URL, self.retrigger_queue_url.as_str()),
            (vars::SYNC_QUIET_SECONDS, "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The target group's targets and their health state, sorted by id.
    pub async fn targets(&self, c: &Clients) -> Vec<(String, String)> {
        let out = c
            .elbv2
            .describe_target_health()
            .target_group_arn(&self.target_group_arn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("describe_target_health: {e:?}"));
        let mut targets: Vec<(String, String)> = out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let id = d.target().and_then(|t| t.id())?.to_owned();
                let state =
                    d.target_health().and_then(|h| h.state()).map(|s| s.as_str().to_owned()).unwrap_or_default();
                Some((id, state))
            })
            .collect();
        targets.sort();
        targets
    }

    /// The AZs of the file system's mount targets, sorted.
    pub async fn mount_target_zones(&self, c: &Clients) -> Vec<String> {
        let out = c
            .efs
            .describe_mount_targets()
            .file_system_id(&self.file_system_id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("describe_mount_targets: {e:?}"));
        let mut zones: Vec<String> =
            out.mount_targets().iter().filter_map(|m| m.availability_zone_name().map(str::to_owned)).collect();
        zones.sort();
        zones
    }

    /// Launches an instance outside the group, in its first subnet.
    pub async fn launch_outside(&self, c: &Clients) -> String {
        c.ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .min_count(1)
            .max_count(1)
            .subnet_id(&self.subnets[0].id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("run_instances: {e:?}"))
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .unwrap_or_default()
            .to_owned()
    }

    /// The group's instances as Auto Scaling reports them, with their AZ.
    pub async fn members(&self, c: &Clients) -> Vec<Member> {
        let out = c
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.asg_name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("describe_auto_scaling_groups: {e:?}"));
        let group = out.auto_scaling_groups.unwrap_or_default().into_iter().next();
        let instances = group.and_then(|g| g.instances).unwrap_or_default();
        instances
            .into_iter()
            .map(|i| Member::new(i.instance_id, i.lifecycle_state.as_ref(), i.availability_zone))
            .collect()
    }

    /// Sets the group's desired capacity.
    pub async fn scale_to(&self, c: &Clients, n: i32) {
        c.autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(&self.asg_name)
            .desired_capacity(n)
            .send()
            .await
            .unwrap_or_else(|e| panic!("set_desired_capacity: {e:?}"));
    }

    /// Detaches `id` from the group (decrementing its desired capacity).
    pub async fn detach(&self, c: &Clients, id: &str) {
        c.autoscaling
            .detach_instances()
            .auto_scaling_group_name(&self.asg_name)
            .instance_ids(id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .unwrap_or_else(|e| panic!("detach_instances: {e:?}"));
    }

    /// An instance's lifecycle state, in the group or in its warm pool.
    pub async fn lifecycle_state(&self, c: &Clients, id: &str) -> Option<String> {
        let mut all = self.members(c).await;
        all.extend(self.pool(c).await);
        all.into_iter().find(|m| m.id == id).map(|m| m.lifecycle_state)
    }

    /// Makes `id`'s lifecycle record unreadable (written by something else).
    pub async fn corrupt_lifecycle_record(&self, c: &Clients, id: &str) {
        use aws_sdk_dynamodb::types::AttributeValue;
        c.dynamodb
            .put_item()
            .table_name(&self.lock_table)
            .item("pk", AttributeValue::S(format!("{}#instance#{id}", self.name)))
            .item("lifecycle", AttributeValue::S("{not json".into()))
            .item("lifecycle_version", AttributeValue::N("1".into()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put_item: {e:?}"));
    }

    /// The warm pool's instances (AWS lists them only through `DescribeWarmPool`).
    pub async fn pool(&self, c: &Clients) -> Vec<Member> {
        let out = c
            .autoscaling
            .describe_warm_pool()
            .auto_scaling_group_name(&self.asg_name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("describe_warm_pool: {e:?}"));
        let instances = out.instances.unwrap_or_default();
        instances
            .into_iter()
            .map(|i| Member::new(i.instance_id, i.lifecycle_state.as_ref(), i.availability_zone))
            .collect()
    }
}

/// Creates the fleet's sync document in SSM from `infra/sync-document.yaml`.
pub async fn create_sync_document(c: &Clients, fleet: &Fleet) {
    create_sync_document_from(c, fleet, "infra/sync-document.yaml").await;
}

/// Creates the fleet's sync document from `path` (relative to the
/// repository root): an earlier version of the document, in compatibility tests.
pub async fn create_sync_document_from(c: &Clients, fleet: &Fleet, path: &str) {
    let path = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    let content = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    c.ssm
        .create_document()
        .name(&fleet.document)
        .content(content)
        .document_type(aws_sdk_ssm::types::DocumentType::Command)
        .document_format(aws_sdk_ssm::types::DocumentFormat::Yaml)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create_document: {e:?}"));
}

/// Uploads `keys` (relative to the fleet's prefix) to the codebase bucket,
/// each holding its own name.
pub async fn upload(c: &Clients, fleet: &Fleet, keys: &[String]) {
    for key in keys {
        fleet.put(c, key, key).await;
    }
}

impl Fleet {
    /// Uploads `key` (relative to the prefix) holding `body`.
    pub async fn put(&self, c: &Clients, key: &str, body: &str) {
        c.s3.put_object()
            .bucket(&self.bucket)
            .key(format!("{}{key}", self.prefix))
            .body(aws_sdk_s3::primitives::ByteStream::from(body.as_bytes().to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put_object {key}: {e:?}"));
    }

    /// Deletes `key` (relative to the prefix).
    pub async fn delete(&self, c: &Clients, key: &str) {
        c.s3.delete_object()
            .bucket(&self.bucket)
            .key(format!("{}{key}", self.prefix))
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete_object {key}: {e:?}"));
    }

    /// The fleet's lock table.
    pub fn store(&self, c: &Clients) -> fleetkeeper::store::Table {
        fleetkeeper::store::Table::new(c.dynamodb.clone(), &self.lock_table, &self.name)
    }

    /// The fleet item (the default before any demand).
    pub async fn item(&self, c: &Clients) -> fleetkeeper::sync::state::FleetItem {
        fleetkeeper::sync::store::FleetStore::load(&self.store(c))
            .await
            .unwrap_or_else(|e| panic!("load the fleet item: {e}"))
            .unwrap_or_default()
    }
}

/// Creates a lock table (one string partition key `pk`) named `name`.
pub async fn lock_table(c: &Clients, name: &str) -> String {
    c.dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("create_table: {e:?}"));
    name.to_owned()
}

async fn security_group(c: &Clients, vpc_id: &str, name: &str) -> String {
    c.ec2
        .create_security_group()
        .group_name(name)
        .description(name)
        .vpc_id(vpc_id)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create_security_group: {e:?}"))
        .group_id
        .unwrap_or_default()
}

impl Fleet {
    /// An internet-facing Application Load Balancer in the fleet's subnets
    /// with a security group of its own, its HTTP listener forwarding to the
    /// fleet's target group: `(load balancer ARN, its security group)`. The
    /// instances' group does not admit it yet (the classic mistake `doctor`
    /// finds): [`Fleet::admit_load_balancer`] fixes it.
    pub async fn load_balancer(&self, c: &Clients) -> (String, String) {
        let sg = security_group(c, &self.vpc_id, &format!("{}-alb", self.name)).await;
        let mut subnets: Vec<String> = Vec::new();
        for s in &self.subnets {
            if !self.subnets.iter().take_while(|o| o.id != s.id).any(|o| o.zone == s.zone) {
                subnets.push(s.id.clone());
            }
        }
        let lb = c
            .elbv2
            .create_load_balancer()
            .name(format!("alb-{}", &self.name[self.name.len() - 10..]))
            .set_subnets(Some(subnets))
            .security_groups(&sg)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create_load_balancer: {e:?}"));
        let arn = lb.load_balancers().first().and_then(|l| l.load_balancer_arn()).unwrap_or_default().to_owned();
        let forward = aws_sdk_elasticloadbalancingv2::types::Action::builder()
            .r#type(aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum::Forward)
            .target_group_arn(&self.target_group_arn)
            .build();
        c.elbv2
            .create_listener()
            .load_balancer_arn(&arn)
            .protocol(ProtocolEnum::Http)
            .port(80)
            .default_actions(forward)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create_listener: {e:?}"));
        (arn, sg)
    }

    /// Lets the load balancer's group reach the instances on port 80.
    pub async fn admit_load_balancer(&self, c: &Clients, lb_group: &str) {
        c.ec2
            .authorize_security_group_ingress()
            .group_id(&self.web_security_group)
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(80)
                    .to_port(80)
                    .user_id_group_pairs(UserIdGroupPair::builder().group_id(lb_group).build())
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("authorize_security_group_ingress: {e:?}"));
    }
}
