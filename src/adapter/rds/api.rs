//! The RDS, EC2, CloudWatch and Performance Insights calls the adapter makes, over the AWS
//! layer in `src/cloud/aws` (SigV4, credential chain, query protocol): typed requests in,
//! the fields we read out. Mutating calls and the apply's polls go through [`Api::retrying`]:
//! throttling, 5xx and transport errors are retried with back-off until the apply's deadline.

use crate::apply::wait;
use crate::cloud::aws::query::list_params;
use crate::cloud::aws::{Aws, Service};
use crate::cloud::time::{now_unix, parse_rfc3339, rfc3339};
use crate::cloud::xml::Element;
use crate::cloud::{CloudError, ErrorKind};
use crate::error::{Error, Kind, Result};
use std::time::{Duration, Instant};

/// AWS accepts at most 20 parameters per ModifyDBParameterGroup / Reset call.
pub const BATCH: usize = 20;

fn p(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

/// One parameter-group status entry of an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStatus {
    pub name: String,
    /// `in-sync`, `applying`, `pending-reboot`, … (None when AWS left it out).
    pub apply_status: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Instance {
    pub identifier: String,
    pub class: String,
    pub status: String,
    pub groups: Vec<GroupStatus>,
    pub cluster: Option<String>,
    pub pi_enabled: bool,
    pub resource_id: Option<String>,
    pub endpoint: Option<(String, u16)>,
}

#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub identifier: String,
    pub parameter_group: Option<String>,
    pub max_acu: Option<f64>,
    /// (instance id, is writer, cluster parameter group status)
    pub members: Vec<(String, bool, Option<String>)>,
}

/// A parameter as `DescribeDBParameters` lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    pub value: Option<String>,
    /// `static` or `dynamic`.
    pub apply_type: Option<String>,
    /// `user`, `system`, `engine-default`.
    pub source: Option<String>,
}

/// A parameter to write: name, value, `immediate` or `pending-reboot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub value: String,
    pub method: &'static str,
}

/// Which kind of group a call addresses (the cluster kind has its own actions and names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    Instance,
    Cluster,
}

impl GroupKind {
    fn name_param(self) -> &'static str {
        match self {
            GroupKind::Instance => "DBParameterGroupName",
            GroupKind::Cluster => "DBClusterParameterGroupName",
        }
    }
    fn word(self) -> &'static str {
        match self {
            GroupKind::Instance => "DB",
            GroupKind::Cluster => "DBCluster",
        }
    }
    pub fn describe(self, group: &str) -> String {
        match self {
            GroupKind::Instance => format!("parameter group {group}"),
            GroupKind::Cluster => format!("cluster parameter group {group}"),
        }
    }
}

/// A latest datapoint: (unix seconds, value).
pub type Point = (i64, f64);

pub struct Api {
    pub aws: Aws,
}

fn text(e: &Element, path: &[&str]) -> Option<String> {
    e.text_at(path)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// Throttling, 5xx and broken connections: worth another try.
pub fn transient(e: &CloudError) -> bool {
    throttled(e)
        || matches!(e.kind, ErrorKind::Transport | ErrorKind::Timeout)
        || e.status.is_some_and(|s| s >= 500)
}

/// AWS refused the call for its rate: it did nothing, unlike a 5xx or a lost answer.
pub fn throttled(e: &CloudError) -> bool {
    e.kind == ErrorKind::Throttled
        || e.status == Some(429)
        || matches!(
            e.code(),
            Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded")
        )
}

/// First pause between two tries of a transient failure, and the largest.
const FIRST_PAUSE: Duration = Duration::from_secs(2);
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// The pause after failed try `tries` (1, 2, …): 2 s doubling up to 30 s, with "equal jitter"
/// (half fixed, half from `random`) so agents throttled together do not retry in step.
pub fn pause_after(tries: u32, random: u64) -> Duration {
    let full = FIRST_PAUSE
        .saturating_mul(1u32 << tries.saturating_sub(1).min(8))
        .min(MAX_PAUSE);
    let half = full / 2;
    half + Duration::from_millis(random % (half.as_millis() as u64 + 1))
}

impl Api {
    /// [`Api::retrying_until`] with a deadline `deadline` from now.
    pub fn retrying<T>(
        &self,
        what: &str,
        deadline: Duration,
        f: impl FnMut() -> crate::cloud::Result<T>,
    ) -> Result<T> {
        self.retrying_until(what, Instant::now() + deadline, f)
    }

    /// Runs `f` until it succeeds, fails for good, or the next pause would end past `until`
    /// (the apply step's deadline): transient errors (throttling, 5xx, broken connections) are
    /// retried after [`pause_after`], each retry logged, the pause interruptible by shutdown.
    /// (Each try is itself the HTTP layer's few quick attempts.)
    pub fn retrying_until<T>(
        &self,
        what: &str,
        until: Instant,
        mut f: impl FnMut() -> crate::cloud::Result<T>,
    ) -> Result<T> {
        let start = Instant::now();
        let mut tries = 0u32;
        loop {
            tries += 1;
            let e = match f() {
                Ok(v) => {
                    if tries > 1 {
                        log::info!("{what}: succeeded on try {tries}");
                    }
                    return Ok(v);
                }
                Err(e) if transient(&e) => e,
                Err(e) => return Err(Error::from(e).context(what)),
            };
            let pause = pause_after(tries, crate::cloud::crypto::random_u64());
            let left = until.saturating_duration_since(Instant::now());
            if pause >= left {
                return Err(Error::from(e).context(format!(
                    "{what}: gave up after {tries} tries in {:.0} s, the apply's deadline (apply.restart_timeout) leaving {:.0} s",
                    start.elapsed().as_secs_f64(),
                    left.as_secs_f64()
                )));
            }
            log::warn!(
                "{what}: try {tries} failed ({e}); retrying in {:.1} s",
                pause.as_secs_f64()
            );
            wait::sleep(pause, what)?;
        }
    }

    pub fn describe_instance(&self, id: &str) -> crate::cloud::Result<Instance> {
        let r = self.aws.query(
            Service::Rds,
            "DescribeDBInstances",
            &[p("DBInstanceIdentifier", id)],
        )?;
        let list = r.result().child("DBInstances");
        let all: Vec<&Element> = list
            .map(|l| l.children_named("DBInstance").collect())
            .unwrap_or_default();
        let i = match all.as_slice() {
            [one] => *one,
            [] => {
                return Err(CloudError::new(
                    ErrorKind::Service,
                    format!("RDS DescribeDBInstances {id}"),
                    "instance not found",
                ))
            }
            _ => {
                return Err(CloudError::new(
                    ErrorKind::Service,
                    format!("RDS DescribeDBInstances {id}"),
                    format!("{} instances answered for one identifier", all.len()),
                ))
            }
        };
        let groups = i
            .child("DBParameterGroups")
            .map(|g| {
                g.children_named("DBParameterGroup")
                    .map(|e| GroupStatus {
                        name: text(e, &["DBParameterGroupName"]).unwrap_or_default(),
                        apply_status: text(e, &["ParameterApplyStatus"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let endpoint = text(i, &["Endpoint", "Address"]).map(|a| {
            let port = text(i, &["Endpoint", "Port"])
                .and_then(|p| p.parse().ok())
                .unwrap_or(5432);
            (a, port)
        });
        Ok(Instance {
            identifier: text(i, &["DBInstanceIdentifier"]).unwrap_or_else(|| id.to_string()),
            class: text(i, &["DBInstanceClass"]).unwrap_or_default(),
            status: text(i, &["DBInstanceStatus"]).unwrap_or_default(),
            groups,
            cluster: text(i, &["DBClusterIdentifier"]),
            pi_enabled: text(i, &["PerformanceInsightsEnabled"]).as_deref() == Some("true"),
            resource_id: text(i, &["DbiResourceId"]),
            endpoint,
        })
    }

    pub fn describe_cluster(&self, id: &str) -> crate::cloud::Result<Cluster> {
        let r = self.aws.query(
            Service::Rds,
            "DescribeDBClusters",
            &[p("DBClusterIdentifier", id)],
        )?;
        let c = r
            .result()
            .path(&["DBClusters", "DBCluster"])
            .ok_or_else(|| {
                CloudError::new(
                    ErrorKind::Service,
                    format!("RDS DescribeDBClusters {id}"),
                    "cluster not found",
                )
            })?;
        let members = c
            .child("DBClusterMembers")
            .map(|m| {
                m.children_named("DBClusterMember")
                    .map(|e| {
                        (
                            text(e, &["DBInstanceIdentifier"]).unwrap_or_default(),
                            text(e, &["IsClusterWriter"]).as_deref() == Some("true"),
                            text(e, &["DBClusterParameterGroupStatus"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Cluster {
            identifier: text(c, &["DBClusterIdentifier"]).unwrap_or_else(|| id.to_string()),
            parameter_group: text(c, &["DBClusterParameterGroup"]),
            max_acu: text(c, &["ServerlessV2ScalingConfiguration", "MaxCapacity"])
                .and_then(|v| v.parse().ok()),
            members,
        })
    }

    /// vCPUs and memory (bytes) of an EC2 instance type (`m5.large`).
    pub fn instance_type(&self, ty: &str) -> crate::cloud::Result<(u32, u64)> {
        let r = self.aws.query(
            Service::Ec2,
            "DescribeInstanceTypes",
            &[p("InstanceType.1", ty)],
        )?;
        let item = r
            .result()
            .path(&["instanceTypeSet", "item"])
            .ok_or_else(|| {
                CloudError::new(
                    ErrorKind::Service,
                    format!("EC2 DescribeInstanceTypes {ty}"),
                    "no such instance type",
                )
            })?;
        let vcpu = text(item, &["vCpuInfo", "defaultVCpus"]).and_then(|v| v.parse().ok());
        let mib: Option<u64> =
            text(item, &["memoryInfo", "sizeInMiB"]).and_then(|v| v.parse().ok());
        match (vcpu, mib) {
            (Some(v), Some(m)) => Ok((v, m * 1024 * 1024)),
            _ => Err(CloudError::decode(
                format!("EC2 DescribeInstanceTypes {ty}"),
                "vCpuInfo.defaultVCpus or memoryInfo.sizeInMiB missing",
            )),
        }
    }

    /// Every parameter of a group (`source`: `user` for the values set in it), all pages.
    pub fn parameters(
        &self,
        kind: GroupKind,
        group: &str,
        source: Option<&str>,
    ) -> crate::cloud::Result<Vec<Parameter>> {
        let action = format!("Describe{}Parameters", kind.word());
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        for _page in 0..200 {
            let mut params = vec![p(kind.name_param(), group), p("MaxRecords", "100")];
            if let Some(s) = source {
                params.push(p("Source", s));
            }
            if let Some(m) = &marker {
                params.push(p("Marker", m.clone()));
            }
            let r = self.aws.query(Service::Rds, &action, &params)?;
            if let Some(list) = r.result().child("Parameters") {
                for e in list.children_named("Parameter") {
                    out.push(Parameter {
                        name: text(e, &["ParameterName"]).unwrap_or_default(),
                        value: e.text_at(&["ParameterValue"]).map(str::to_string),
                        apply_type: text(e, &["ApplyType"]),
                        source: text(e, &["Source"]),
                    });
                }
            }
            marker = text(r.result(), &["Marker"]);
            if marker.is_none() {
                return Ok(out);
            }
        }
        Err(CloudError::decode(
            format!("RDS {action} {group}"),
            "more than 200 pages of parameters",
        ))
    }

    /// `Modify{DB,DBCluster}ParameterGroup` with at most [`BATCH`] changes.
    pub fn modify(
        &self,
        kind: GroupKind,
        group: &str,
        changes: &[Change],
    ) -> crate::cloud::Result<()> {
        debug_assert!(changes.len() <= BATCH);
        let items: Vec<Vec<(&str, String)>> = changes
            .iter()
            .map(|c| {
                vec![
                    ("ParameterName", c.name.clone()),
                    ("ParameterValue", c.value.clone()),
                    ("ApplyMethod", c.method.to_string()),
                ]
            })
            .collect();
        let mut params = vec![p(kind.name_param(), group)];
        params.extend(list_params("Parameters.Parameter", &items));
        self.aws
            .query(
                Service::Rds,
                &format!("Modify{}ParameterGroup", kind.word()),
                &params,
            )
            .map(|_| ())
    }

    /// `Reset{DB,DBCluster}ParameterGroup` of named parameters (back to the engine default).
    pub fn reset(
        &self,
        kind: GroupKind,
        group: &str,
        names: &[(String, &'static str)],
    ) -> crate::cloud::Result<()> {
        let items: Vec<Vec<(&str, String)>> = names
            .iter()
            .map(|(n, m)| vec![("ParameterName", n.clone()), ("ApplyMethod", m.to_string())])
            .collect();
        let mut params = vec![
            p(kind.name_param(), group),
            p("ResetAllParameters", "false"),
        ];
        params.extend(list_params("Parameters.Parameter", &items));
        self.aws
            .query(
                Service::Rds,
                &format!("Reset{}ParameterGroup", kind.word()),
                &params,
            )
            .map(|_| ())
    }

    pub fn reboot(&self, id: &str) -> crate::cloud::Result<()> {
        self.aws
            .query(
                Service::Rds,
                "RebootDBInstance",
                &[p("DBInstanceIdentifier", id)],
            )
            .map(|_| ())
    }

    /// The latest datapoint of each `AWS/RDS` metric for the instance, in one `GetMetricData`
    /// call: a 10-minute window of 60-second averages, so a datapoint exists even when the
    /// newest minute is not published yet (pitfall 9). `None` for a metric without data.
    pub fn latest_metrics(
        &self,
        instance: &str,
        metrics: &[&str],
    ) -> crate::cloud::Result<Vec<Option<Point>>> {
        let now = now_unix();
        let mut params = vec![
            p("StartTime", rfc3339(now - 600)),
            p("EndTime", rfc3339(now)),
            p("ScanBy", "TimestampDescending"),
        ];
        for (i, m) in metrics.iter().enumerate() {
            let q = format!("MetricDataQueries.member.{}", i + 1);
            params.push(p(&format!("{q}.Id"), format!("m{i}")));
            params.push(p(&format!("{q}.MetricStat.Metric.Namespace"), "AWS/RDS"));
            params.push(p(&format!("{q}.MetricStat.Metric.MetricName"), *m));
            params.push(p(
                &format!("{q}.MetricStat.Metric.Dimensions.member.1.Name"),
                "DBInstanceIdentifier",
            ));
            params.push(p(
                &format!("{q}.MetricStat.Metric.Dimensions.member.1.Value"),
                instance,
            ));
            params.push(p(&format!("{q}.MetricStat.Period"), "60"));
            params.push(p(&format!("{q}.MetricStat.Stat"), "Average"));
            params.push(p(&format!("{q}.ReturnData"), "true"));
        }
        let r = self
            .aws
            .query(Service::CloudWatch, "GetMetricData", &params)?;
        let mut out = vec![None; metrics.len()];
        if let Some(results) = r.result().child("MetricDataResults") {
            for m in results.children_named("member") {
                let Some(idx) = text(m, &["Id"])
                    .and_then(|id| id.strip_prefix('m').and_then(|n| n.parse::<usize>().ok()))
                    .filter(|i| *i < metrics.len())
                else {
                    continue;
                };
                let ts: Vec<Option<i64>> = m
                    .child("Timestamps")
                    .map(|t| {
                        t.children_named("member")
                            .map(|e| parse_rfc3339(e.text.trim()))
                            .collect()
                    })
                    .unwrap_or_default();
                let vs: Vec<Option<f64>> = m
                    .child("Values")
                    .map(|t| {
                        t.children_named("member")
                            .map(|e| e.text.trim().parse().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                // Latest by timestamp: the order of the answer is not relied on.
                out[idx] = ts
                    .iter()
                    .zip(vs.iter())
                    .filter_map(|(t, v)| Some(((*t)?, (*v)?)))
                    .max_by_key(|(t, _)| *t);
            }
        }
        Ok(out)
    }

    /// Performance Insights `os.memory.active.avg` (KB) of `resource_id`: the latest point.
    pub fn pi_active_memory_kb(&self, resource_id: &str) -> crate::cloud::Result<Option<Point>> {
        let now = now_unix();
        let body = serde_json::json!({
            "ServiceType": "RDS",
            "Identifier": resource_id,
            "StartTime": now - 600,
            "EndTime": now,
            "PeriodInSeconds": 60,
            "MetricQueries": [{"Metric": "os.memory.active.avg"}],
        });
        let v = self.aws.json11(
            Service::Pi,
            "PerformanceInsightsv20180227.GetResourceMetrics",
            &body,
        )?;
        let points = v["MetricList"][0]["DataPoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // The newest point often has no Value yet: take the newest one that has.
        Ok(points
            .iter()
            .filter_map(|d| Some((d["Timestamp"].as_f64()? as i64, d["Value"].as_f64()?)))
            .max_by_key(|(t, _)| *t))
    }
}

/// A cloud error that is a shutdown interruption stays one (the pipeline keeps the journal).
pub fn is_interrupted(e: &Error) -> bool {
    e.kind == Kind::Interrupted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_from_two_seconds_to_thirty_with_equal_jitter() {
        for (tries, full) in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 30), (9, 30), (40, 30)] {
            let full = Duration::from_secs(full);
            assert_eq!(pause_after(tries, 0), full / 2, "try {tries}");
            for r in [1u64, 7, 12345, u64::MAX] {
                let p = pause_after(tries, r);
                assert!(p >= full / 2 && p <= full, "try {tries}: {p:?}");
            }
        }
        // The random half really varies.
        let seen: std::collections::HashSet<Duration> = (0..50)
            .map(|_| pause_after(3, crate::cloud::crypto::random_u64()))
            .collect();
        assert!(seen.len() > 10, "{seen:?}");
    }

    #[test]
    fn throttling_and_5xx_are_transient_and_throttling_did_nothing() {
        let mut e = CloudError::new(
            ErrorKind::Service,
            "RDS ModifyDBParameterGroup",
            "Rate exceeded",
        );
        e.status = Some(400);
        e.code = Some("Throttling".into());
        assert!(transient(&e) && throttled(&e));
        e.code = Some("RequestLimitExceeded".into());
        assert!(transient(&e) && throttled(&e));
        e.code = Some("InvalidParameterValue".into());
        assert!(!transient(&e));
        e.code = None;
        for s in [500, 503] {
            e.status = Some(s);
            assert!(transient(&e) && !throttled(&e), "{s}");
        }
    }
}
