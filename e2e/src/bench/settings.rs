//! What the benchmark runs with, next to what the charts install by default: every interval,
//! flag and limit that could make its figures differ from a real installation, with the chart's
//! value read from `charts/*/values.yaml` of the checkout at run time (not copied here).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;

/// One setting, as the charts have it and as the benchmark ran it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// What it is.
    pub what: String,
    /// The charts' default (or, where no chart applies, what a real cluster has).
    pub chart: String,
    /// What the benchmark used.
    pub bench: String,
    /// Whether the two are the same in effect.
    pub same: bool,
}

/// How the benchmark starts the hub and its pool.
#[derive(Clone, Debug)]
pub struct BenchHub {
    /// `--lease-duration`.
    pub lease_duration: String,
    /// `--log-format`.
    pub log_format: String,
    /// `RUST_LOG`.
    pub rust_log: String,
    /// The pool's `spec.heartbeatTimeout`.
    pub pool_heartbeat_timeout: String,
    /// How often the fake agents renew their heartbeat.
    pub heartbeat_interval: String,
}

/// The operator's log filter when `RUST_LOG` is unset (`operator/src/telemetry.rs`), which is
/// what the hub chart runs with: it sets no `RUST_LOG`.
pub const OPERATOR_DEFAULT_LOG: &str = "info,kube_runtime=warn,kube_client=warn";

/// The hub chart's default `leaseDuration`, which the benchmark runs the hub with.
pub fn chart_lease_duration(root: &Path) -> Result<String, Error> {
    chart_value(root, "gpufed-hub", "leaseDuration")
}

/// The hub chart's default `logFormat`.
pub fn chart_log_format(root: &Path) -> Result<String, Error> {
    chart_value(root, "gpufed-hub", "logFormat")
}

/// The scalar at `path` (`a.b.c`) of `charts/<chart>/values.yaml` under `root`; an error if the
/// file or the value is missing.
pub fn chart_value(root: &Path, chart: &str, path: &str) -> Result<String, Error> {
    let file = root.join("charts").join(chart).join("values.yaml");
    let v = at(&read_values(&file)?, path);
    if v == "?" {
        return Err(Error::Other(format!("{} has no {path}", file.display())));
    }
    Ok(v)
}

fn read_values(path: &Path) -> Result<serde_json::Value, Error> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    serde_norway::from_str(&text).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}

/// The scalar at `path` (`a.b.c`) of a values file, as text ("?" when missing).
fn at(values: &serde_json::Value, path: &str) -> String {
    let v = path.split('.').try_fold(values, |v, k| v.get(k));
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "?".into(),
        Some(other) => other.to_string(),
    }
}

fn row(what: &str, chart: String, bench: String, same: bool) -> Setting {
    Setting {
        what: what.into(),
        chart,
        bench,
        same,
    }
}

/// Every setting the benchmark compares, reading the chart defaults under `root`.
pub fn compare(root: &Path, hub: &BenchHub) -> Result<Vec<Setting>, Error> {
    let hub_values = read_values(&root.join("charts/gpufed-hub/values.yaml"))?;
    let member_values = read_values(&root.join("charts/gpufed-member/values.yaml"))?;
    let lease = at(&hub_values, "leaseDuration");
    let log_format = at(&hub_values, "logFormat");
    let heartbeat = at(&member_values, "agent.heartbeatInterval");
    let inventory = at(&member_values, "agent.inventoryInterval");
    let pool_default = serde_json::from_value::<gpufed_crds::GpuPoolSpec>(serde_json::json!({}))
        .map(|s| s.heartbeat_timeout.to_string())
        .unwrap_or_else(|_| "?".into());
    Ok(vec![
        row(
            "hub replicas",
            at(&hub_values, "replicas"),
            "1 (one process, no standby)".into(),
            false,
        ),
        row(
            "hub `--lease-duration`",
            lease.clone(),
            hub.lease_duration.clone(),
            lease == hub.lease_duration,
        ),
        row(
            "hub `--log-format`",
            log_format.clone(),
            hub.log_format.clone(),
            log_format == hub.log_format,
        ),
        row(
            "hub log filter (`RUST_LOG`)",
            format!("unset: the operator's default `{OPERATOR_DEFAULT_LOG}`"),
            format!("`{}`", hub.rust_log),
            hub.rust_log == OPERATOR_DEFAULT_LOG,
        ),
        row(
            "hub credentials",
            "the chart's ServiceAccount and ClusterRole (RBAC decides each request)".into(),
            "an admin client certificate (`system:masters`)".into(),
            false,
        ),
        row(
            "hub resources",
            format!(
                "requests cpu {}, limits memory {}",
                at(&hub_values, "resources.requests.cpu"),
                at(&hub_values, "resources.limits.memory")
            ),
            "none (a process on the host)".into(),
            false,
        ),
        row(
            "hub apiserver: API Priority and Fairness",
            format!(
                "`apiPriority.enabled: {}`: the hub in a priority level of its own ({} shares)",
                at(&hub_values, "apiPriority.enabled"),
                at(&hub_values, "apiPriority.nominalConcurrencyShares")
            ),
            "off, and no in-flight limits (`--enable-priority-and-fairness=false --max-requests-inflight=0 \
             --max-mutating-requests-inflight=0`); a `system:masters` client is exempt from APF anyway"
                .into(),
            false,
        ),
        row(
            "hub apiserver's etcd (no chart)",
            "fsync on every commit".into(),
            "one member, `--unsafe-no-fsync=true`, on the same cores".into(),
            false,
        ),
        row(
            "pool `heartbeatTimeout`",
            format!("{pool_default} (CRD default)"),
            hub.pool_heartbeat_timeout.clone(),
            pool_default == hub.pool_heartbeat_timeout,
        ),
        row(
            "member agent heartbeat (`agent.heartbeatInterval`)",
            heartbeat.clone(),
            format!("{} (fake agents in the bench process)", hub.heartbeat_interval),
            heartbeat == hub.heartbeat_interval,
        ),
        row(
            "member inventory report (`agent.inventoryInterval`)",
            inventory,
            "once per member, before any job (fake agents)".into(),
            false,
        ),
    ])
}

/// How the peer run's gpufed side (a [`crate::joining::Pool`]: the hub and the agents as
/// processes, see [`crate::joining::pool::flags`]) runs, next to the charts' defaults read under
/// `root`; `heartbeat_timeout` is the pool's, as run.
pub fn compare_pool(root: &Path, heartbeat_timeout: &str) -> Result<Vec<Setting>, Error> {
    use crate::joining::pool::flags;
    let hub = read_values(&root.join("charts/gpufed-hub/values.yaml"))?;
    let member = read_values(&root.join("charts/gpufed-member/values.yaml"))?;
    let same_row = |what: &str, chart: String, bench: &str| {
        let same = chart == bench;
        row(what, chart, bench.to_string(), same)
    };
    let pool_default = serde_json::from_value::<gpufed_crds::GpuPoolSpec>(serde_json::json!({}))
        .map(|s| s.heartbeat_timeout.to_string())
        .unwrap_or_else(|_| "?".into());
    let rate = |v: &serde_json::Value, at_: &str| {
        format!(
            "{} / {}",
            at(v, &format!("{at_}.qps")),
            at(v, &format!("{at_}.burst"))
        )
    };
    Ok(vec![
        row(
            "hub replicas",
            at(&hub, "replicas"),
            "1 (one process, no standby)".into(),
            false,
        ),
        same_row(
            "hub `--lease-duration`",
            at(&hub, "leaseDuration"),
            &flags::hub_lease_duration(root)?,
        ),
        row(
            "hub and agent client rate limit (`kubeApi`: qps / burst)",
            format!(
                "{}; agent {}",
                rate(&hub, "kubeApi"),
                rate(&member, "agent.kubeApi")
            ),
            "the charts' values, passed as flags".into(),
            true,
        ),
        row(
            "hub and agent credentials",
            "the charts' ServiceAccounts; the agent reaches the hub with the hub-made kubeconfig"
                .into(),
            "the same (ServiceAccount tokens as kubeconfigs; the hub-made kubeconfig)".into(),
            true,
        ),
        row(
            "`--log-format` (hub / agent / gpu-probe)",
            format!(
                "{} / {} / {}",
                at(&hub, "logFormat"),
                at(&member, "agent.logFormat"),
                at(&member, "probe.logFormat")
            ),
            flags::LOG_FORMAT.into(),
            [
                at(&hub, "logFormat"),
                at(&member, "agent.logFormat"),
                at(&member, "probe.logFormat"),
            ]
            .iter()
            .all(|f| f == flags::LOG_FORMAT),
        ),
        row(
            "log filter (`RUST_LOG`): hub / agent and gpu-probe",
            "unset: the binaries' defaults".into(),
            if flags::default_logs() {
                "the binaries' default filters, set explicitly (release builds, as `make bench` runs them)".into()
            } else {
                format!(
                    "`{}` / `{}`, `{}`",
                    flags::TEST_RUST_LOG,
                    flags::TEST_RUST_LOG,
                    flags::TEST_PROBE_RUST_LOG
                )
            },
            flags::default_logs(),
        ),
        row(
            "hub and agent resources",
            format!(
                "requests cpu {} / {}",
                at(&hub, "resources.requests.cpu"),
                at(&member, "agent.resources.requests.cpu")
            ),
            "none (processes on the host)".into(),
            false,
        ),
        row(
            "agent's route to the hub",
            "direct".into(),
            "through a TCP proxy in the benchmark process (so the run can cut it)".into(),
            false,
        ),
        row(
            "apiservers: API Priority and Fairness",
            format!(
                "`apiPriority.enabled: {}` on the hub",
                at(&hub, "apiPriority.enabled")
            ),
            "off, no in-flight limits, on every cluster (Kueue's clusters too)".into(),
            false,
        ),
        row(
            "pool `heartbeatTimeout`",
            format!("{pool_default} (CRD default)"),
            heartbeat_timeout.into(),
            pool_default == heartbeat_timeout,
        ),
        same_row(
            "agent `heartbeatInterval`",
            at(&member, "agent.heartbeatInterval"),
            flags::AGENT_HEARTBEAT_INTERVAL,
        ),
        same_row(
            "agent `inventoryInterval`",
            at(&member, "agent.inventoryInterval"),
            flags::AGENT_INVENTORY_INTERVAL,
        ),
        same_row(
            "agent `telemetryMaxAge`",
            at(&member, "agent.telemetryMaxAge"),
            flags::AGENT_TELEMETRY_MAX_AGE,
        ),
        row(
            "agent `usageReportInterval`",
            at(&member, "agent.usageReportInterval"),
            "the chart's value, passed as a flag".into(),
            true,
        ),
        row(
            "agent `usageReportMaxRate`",
            at(&member, "agent.usageReportMaxRate"),
            "the chart's value, passed as a flag".into(),
            true,
        ),
        same_row(
            "gpu-probe `interval`",
            at(&member, "probe.interval"),
            flags::PROBE_INTERVAL,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_defaults_are_read_from_the_checkout() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let hub = BenchHub {
            lease_duration: "4s".into(),
            log_format: "json".into(),
            rust_log: OPERATOR_DEFAULT_LOG.into(),
            pool_heartbeat_timeout: "40s".into(),
            heartbeat_interval: "5s".into(),
        };
        let rows = compare(root, &hub).unwrap();
        let lease = rows.iter().find(|r| r.what.contains("lease")).unwrap();
        assert_ne!(lease.chart, "?");
        assert_eq!(lease.same, lease.chart == "4s");
        let log = rows.iter().find(|r| r.what.contains("RUST_LOG")).unwrap();
        assert!(log.same, "{log:?}");
        assert!(rows.iter().all(|r| !r.chart.contains('?')), "{rows:?}");
    }

    #[test]
    fn the_pools_departures_from_the_charts_are_read_from_the_checkout() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let rows = compare_pool(root, "20s").unwrap();
        assert!(rows.iter().all(|r| !r.chart.contains('?')), "{rows:?}");
        let timeout = rows
            .iter()
            .find(|r| r.what.contains("heartbeatTimeout"))
            .unwrap();
        assert_eq!(timeout.bench, "20s");
        assert_eq!(timeout.same, timeout.chart.starts_with("20s "));
        let hb = rows
            .iter()
            .find(|r| r.what.contains("heartbeatInterval"))
            .unwrap();
        assert_eq!(
            hb.bench,
            crate::joining::pool::flags::AGENT_HEARTBEAT_INTERVAL
        );
        assert!(!hb.chart.is_empty());
    }
}
