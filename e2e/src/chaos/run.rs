//! The chaos run: a paying pool of two members (real agents and gpu-probe on kwok, each reaching the
//! hub through a TCP proxy that can be cut), two hub replicas (leader and standby), anvil with the
//! contracts; a mixed workload while a fault scheduler, drawn from a seeded `StdRng`, injects and
//! heals faults one after the other; then everything is healed, the run waits (bounded) for
//! quiescence, and the recorder's history goes to the checker.

use std::path::Path;
use std::time::{Duration, Instant};

use gpufed_crds::{AttemptPhase, ComputeJob, JobPhase, SettlementState};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::check::{Report, check};
use super::history::{ChainEvent, Event, History, JobRef};
use super::recorder::Recorder;
use crate::chain::{Chain, Contracts, accounts};
use crate::demo::{join_paying_pool, pool_spec};
use crate::joining::pool::{JOBS_NAMESPACE, SYSTEM_NAMESPACE, flags};
use crate::joining::{MemberPlan, Pool, wait_ready_with_free};
use crate::process::free_port;
use crate::{Error, NodeSpec, Tools};

/// How long a run injects faults, and how long it may wait for quiescence afterwards.
#[derive(Clone, Debug)]
pub struct Profile {
    /// `short` or `long`.
    pub name: String,
    /// The fault and workload window.
    pub window: Duration,
    /// After healing, the run waits for every job to end (or stay Pending with a reason) as long
    /// as jobs keep ending, being placed or being settled: it gives up after this long without
    /// any of them. A queue of 8-GPU jobs drains one at a time, so a fixed wait would cut it off
    /// while it still moves.
    pub quiesce: Duration,
    /// The longest wait after healing in all, moving or not.
    pub quiesce_cap: Duration,
}

impl Profile {
    /// About 3 minutes in all (start-up included): `make test`.
    pub fn short() -> Profile {
        Profile {
            name: "short".into(),
            window: Duration::from_secs(90),
            quiesce: Duration::from_secs(120),
            quiesce_cap: Duration::from_secs(600),
        }
    }

    /// 30 minutes of faults: `make bench`.
    pub fn long() -> Profile {
        Profile {
            name: "long".into(),
            window: Duration::from_secs(30 * 60),
            quiesce: Duration::from_secs(300),
            quiesce_cap: Duration::from_secs(30 * 60),
        }
    }

    /// By name.
    pub fn named(name: &str) -> Result<Profile, Error> {
        match name {
            "short" => Ok(Profile::short()),
            "long" => Ok(Profile::long()),
            other => Err(Error::Other(format!("no chaos profile {other}"))),
        }
    }
}

/// The members, their processes, and the pool's heartbeat timeout.
const MEMBERS: [&str; 2] = ["alpha", "beta"];
const HEARTBEAT_TIMEOUT: &str = "15s";
const HUBS: [(&str, &str); 2] = [("hub-0", "gpufed-hub"), ("hub-1", "gpufed-hub-1")];

/// A fault the scheduler can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of a member's agent, restarted after the outage.
    KillAgent,
    /// `kill -9` of a member's kube-apiserver, restarted after the outage.
    KillMemberApiserver,
    /// `kill -9` of the hub leader; the standby takes over; the killed one restarts as standby.
    KillHubLeader,
    /// SIGSTOP of the hub leader past its lease, then SIGCONT.
    PauseHubLeader,
    /// The agent's TCP proxy to the hub refuses new connections and cuts open ones.
    Partition,
    /// anvil stopped (state kept) and restarted.
    StopAnvil,
    /// `kill -9` of a member's gpu-probe, restarted after the outage.
    KillProbe,
    /// The wall clock of a member's agent and gpu-probe shifted by 10–120 s, either way, then put
    /// back (libfaketime; the member's Go control plane cannot be skewed, see docs/reliability.md).
    SkewClock,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::KillAgent,
        Fault::KillMemberApiserver,
        Fault::KillHubLeader,
        Fault::PauseHubLeader,
        Fault::Partition,
        Fault::StopAnvil,
        Fault::KillProbe,
        Fault::SkewClock,
    ];

    /// Name in the history.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillAgent => "kill-agent",
            Fault::KillMemberApiserver => "kill-member-apiserver",
            Fault::KillHubLeader => "kill-hub-leader",
            Fault::PauseHubLeader => "pause-hub-leader",
            Fault::Partition => "partition-agent-hub",
            Fault::StopAnvil => "stop-anvil",
            Fault::KillProbe => "kill-gpu-probe",
            Fault::SkewClock => "skew-member-clock",
        }
    }

    /// How long the fault lasts, drawn: short outages and ones past the heartbeat timeout (15 s)
    /// and the telemetry max age (10 s).
    fn outage(self, rng: &mut StdRng, lease: Duration) -> Duration {
        let secs = match self {
            Fault::KillAgent | Fault::Partition => rng.random_range(3..=25),
            Fault::KillMemberApiserver => rng.random_range(2..=12),
            Fault::KillHubLeader => rng.random_range(2..=10),
            // Past the hub's lease.
            Fault::PauseHubLeader => lease.as_secs() + rng.random_range(2..=8),
            Fault::StopAnvil => rng.random_range(3..=15),
            Fault::KillProbe => rng.random_range(5..=20),
            Fault::SkewClock => rng.random_range(5..=40),
        };
        Duration::from_secs(secs)
    }
}

/// One job of the workload.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Single,
    Eight,
    Gang,
    Impossible,
    PriceCapped,
}

fn manifest(kind: Kind, ns: &str, name: &str, seconds: u64) -> Value {
    let (replicas, gpus, cap) = match kind {
        Kind::Single => (1, 1, "3.00"),
        Kind::Eight => (1, 8, "3.00"),
        Kind::Gang => (2, 4, "3.00"),
        // No node has more than 8 GPUs (the CRD allows up to 16 per replica).
        Kind::Impossible => (1, 16, "3.00"),
        // Only beta (A100 at 1.20) is cheap enough.
        Kind::PriceCapped => (1, 2, "1.50"),
    };
    json!({"apiVersion": "gpufed.io/v1alpha1", "kind": "ComputeJob",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"replicas": replicas, "gpusPerReplica": gpus,
                    "gpu": {"models": ["H100", "A100"]},
                    "maxPricePerGpuHour": cap, "maxDuration": "10m",
                    "template": {"containers": [{"name": "main", "image": "busybox:1.36",
                        "env": [{"name": "GPUFED_SIM_DURATION", "value": format!("{seconds}s")}]}]}}})
}

fn plans() -> Vec<MemberPlan> {
    let nodes = |name: &str, profile: &str| -> Vec<NodeSpec> {
        (0..2)
            .map(|i| NodeSpec::new(&format!("{name}-gpu-{i}"), profile, 8, "eu-west"))
            .collect()
    };
    vec![
        MemberPlan::new("alpha", nodes("alpha", "H100-SXM-80GB"), "H100", "2.40")
            .region("eu-west")
            .wallet(accounts::ALPHA.1)
            .via_proxy()
            .skewable_clock(),
        MemberPlan::new("beta", nodes("beta", "A100-SXM-40GB"), "A100", "1.20")
            .region("eu-west")
            .wallet(accounts::BETA.1)
            .via_proxy()
            .skewable_clock(),
    ]
}

/// The run's moving parts.
struct World {
    pool: Pool,
    chain: Chain,
    contracts: Contracts,
    recorder: Recorder,
    hub: Client,
}

impl World {
    /// The hub process holding the leader Lease now.
    async fn leader(&self) -> Option<&'static str> {
        let holder = Api::<Lease>::namespaced(self.hub.clone(), SYSTEM_NAMESPACE)
            .get_opt("gpufed-hub")
            .await
            .ok()??
            .spec?
            .holder_identity?;
        HUBS.iter()
            .find(|(id, _)| *id == holder)
            .map(|(_, process)| *process)
    }

    fn member_mut(&mut self, name: &str) -> Result<&mut crate::Cluster, Error> {
        self.pool
            .members
            .iter_mut()
            .find(|m| m.name() == name)
            .ok_or_else(|| Error::Other(format!("no member {name}")))
    }

    /// Injects `fault` on `member` (`skew`: the clock offset in seconds, for [`Fault::SkewClock`]);
    /// returns what to heal, as `cluster/process`.
    async fn inject(
        &mut self,
        fault: Fault,
        member: &str,
        skew: i64,
    ) -> Result<Option<String>, Error> {
        let target = match fault {
            Fault::KillAgent | Fault::KillMemberApiserver | Fault::KillProbe => {
                let process = match fault {
                    Fault::KillAgent => "gpufed-agent",
                    Fault::KillMemberApiserver => "kube-apiserver",
                    _ => "gpu-probe",
                };
                if let Some(p) = self.member_mut(member)?.process_mut(process) {
                    p.signal(libc::SIGKILL);
                }
                format!("{member}/{process}")
            }
            Fault::KillHubLeader | Fault::PauseHubLeader => {
                let Some(leader) = self.leader().await else {
                    return Ok(None);
                };
                let signal = if fault == Fault::KillHubLeader {
                    libc::SIGKILL
                } else {
                    libc::SIGSTOP
                };
                if let Some(p) = self.pool.hub.process_mut(leader) {
                    p.signal(signal);
                }
                format!("hub/{leader}")
            }
            Fault::Partition => {
                if let Some(p) = &self.pool.joined(member)?.proxy {
                    p.cut();
                }
                format!("{member}/proxy")
            }
            Fault::StopAnvil => {
                self.chain.stop();
                "anvil".to_string()
            }
            Fault::SkewClock => {
                self.pool.joined(member)?.skew_clock(skew)?;
                format!("{member}/clock{skew:+}s")
            }
        };
        self.recorder.fault(fault.name(), &target, false);
        Ok(Some(target))
    }

    async fn heal(&mut self, fault: Fault, target: &str) -> Result<(), Error> {
        let (cluster, process) = target.split_once('/').unwrap_or(("", target));
        match fault {
            Fault::KillAgent | Fault::KillMemberApiserver | Fault::KillProbe => {
                self.member_mut(cluster)?.respawn(process)?
            }
            Fault::KillHubLeader => self.pool.hub.respawn(process)?,
            Fault::PauseHubLeader => {
                if let Some(p) = self.pool.hub.process_mut(process) {
                    p.signal(libc::SIGCONT);
                }
            }
            Fault::Partition => {
                if let Some(p) = &self.pool.joined(cluster)?.proxy {
                    p.restore();
                }
            }
            Fault::StopAnvil => self.chain.resume().await?,
            Fault::SkewClock => self.pool.joined(cluster)?.skew_clock(0)?,
        }
        self.recorder.fault(fault.name(), target, true);
        Ok(())
    }

    /// Restarts any gpufed component that exited by itself (a hub that lost its lease exits by
    /// design, ADR 0016), as its Deployment would; recorded as a fault of its own. `injected` is
    /// the target of the fault in progress, left down until the fault is healed.
    fn supervise(&mut self, injected: Option<&str>) -> Result<(), Error> {
        let mut restart = vec![];
        for (_, p) in HUBS {
            if self
                .pool
                .hub
                .process_mut(p)
                .is_some_and(|p| p.exited().is_some())
            {
                restart.push(("hub".to_string(), p));
            }
        }
        for m in &mut self.pool.members {
            for p in ["gpufed-agent", "gpu-probe", "kube-apiserver"] {
                if m.process_mut(p).is_some_and(|p| p.exited().is_some()) {
                    restart.push((m.name().to_string(), p));
                }
            }
        }
        for (cluster, p) in restart {
            let target = format!("{cluster}/{p}");
            if injected == Some(target.as_str()) {
                continue;
            }
            self.recorder.fault("exited-by-itself", &target, false);
            if cluster == "hub" {
                self.pool.hub.respawn(p)?;
            } else {
                self.member_mut(&cluster)?.respawn(p)?;
            }
            self.recorder.fault("exited-by-itself", &target, true);
        }
        Ok(())
    }
}

async fn start(tools: &Tools, dir: &Path) -> Result<World, Error> {
    let chain = Chain::start(tools, dir).await?;
    let contracts = chain.deploy_all(tools, 250, 10_000, 500, 200).await?;
    let mut pool = join_paying_pool(
        tools,
        pool_spec(&chain, &contracts, HEARTBEAT_TIMEOUT),
        &plans(),
    )
    .await?;
    // The standby: the same command as the leader, another identity and metrics port.
    pool.hub.spawn_like(
        HUBS[0].1,
        HUBS[1].1,
        &[
            ("--identity=", HUBS[1].0.to_string()),
            ("--metrics-addr=", format!("127.0.0.1:{}", free_port()?)),
        ],
    )?;
    let hub = pool.hub.client();
    for ns in ["team-a", "team-b"] {
        pool.hub.create_namespace(ns).await?;
    }
    for m in MEMBERS {
        wait_ready_with_free(&hub, m, 16, Duration::from_secs(120)).await?;
    }
    let members: Vec<(String, Client)> = pool
        .members
        .iter()
        .map(|m| (m.name().to_string(), m.client()))
        .collect();
    let recorder = Recorder::start(&hub, &members, JOBS_NAMESPACE);
    Ok(World {
        pool,
        chain,
        contracts,
        recorder,
        hub,
    })
}

/// What the run sees of the hub while it waits for quiescence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Snapshot {
    /// Jobs not yet ended (nor waiting with a reason), or still holding the lock of an ended
    /// attempt: 0 when nothing is left to happen.
    left: usize,
    /// (jobs ended, attempts made, ended attempts settled): any change is progress. A backlog
    /// that drains a few jobs at a time keeps `left` level (each job placed replaces one that
    /// ended, and a job waiting for GPUs has a reason) while these move.
    progress: (usize, usize, usize),
}

/// The hub's jobs as a [`Snapshot`]; `None` when the hub cannot be listed.
async fn snapshot(w: &World) -> Option<Snapshot> {
    let jobs = Api::<ComputeJob>::all(w.hub.clone())
        .list(&Default::default())
        .await
        .ok()?;
    let mut snap = Snapshot {
        left: 0,
        progress: (0, 0, 0),
    };
    for j in &jobs.items {
        let Some(s) = j.status.as_ref() else {
            snap.left += 1;
            continue;
        };
        // An attempt still running may hold its lock; one that ended must not.
        let mut settled = true;
        for a in &s.attempts {
            snap.progress.1 += 1;
            let ended = matches!(
                a.phase,
                AttemptPhase::Succeeded
                    | AttemptPhase::Failed
                    | AttemptPhase::Lost
                    | AttemptPhase::Cancelled
                    | AttemptPhase::Preempted
            );
            let in_flight = a.settlement.as_ref().is_some_and(|st| {
                matches!(
                    st.state,
                    SettlementState::Locking | SettlementState::Locked | SettlementState::Settling
                )
            });
            if ended && in_flight {
                settled = false;
            } else if ended {
                snap.progress.2 += 1;
            }
        }
        if s.phase.is_finished() {
            snap.progress.0 += 1;
        }
        let done =
            s.phase.is_finished() || (s.phase == JobPhase::Pending && s.explanation.is_some());
        if !done || !settled {
            snap.left += 1;
        }
    }
    Some(snap)
}

/// How long nothing must be left before the run counts as quiescent: longer than a scheduling
/// pass, so that the moment between one job of a backlog ending and the next being placed is
/// not taken for the end.
const QUIET_FOR: Duration = Duration::from_secs(15);

/// The wait for quiescence after healing.
#[derive(Debug)]
struct Quiescence {
    quiesce: Duration,
    cap: Instant,
    last_progress: Instant,
    last: Option<(usize, usize, usize)>,
    quiet_since: Option<Instant>,
    /// The fewest jobs left seen, for the log.
    fewest: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Wait {
    Quiet,
    GaveUp,
    Waiting,
}

impl Quiescence {
    fn new(now: Instant, profile: &Profile) -> Quiescence {
        Quiescence {
            quiesce: profile.quiesce,
            cap: now + profile.quiesce_cap,
            last_progress: now,
            last: None,
            quiet_since: None,
            fewest: usize::MAX,
        }
    }

    fn observe(&mut self, now: Instant, snap: Option<Snapshot>) -> Wait {
        if let Some(snap) = snap {
            self.fewest = self.fewest.min(snap.left);
            if self.last != Some(snap.progress) {
                self.last = Some(snap.progress);
                self.last_progress = now;
            }
            if snap.left == 0 {
                let since = *self.quiet_since.get_or_insert(now);
                if now.duration_since(since) >= QUIET_FOR {
                    return Wait::Quiet;
                }
            } else {
                self.quiet_since = None;
            }
        }
        if now >= self.cap || now.duration_since(self.last_progress) >= self.quiesce {
            return Wait::GaveUp;
        }
        Wait::Waiting
    }
}

/// Runs `profile` with `seed` in `dir`: returns the history and the checker's report.
pub async fn run(
    tools: &Tools,
    profile: &Profile,
    seed: u64,
    dir: &Path,
) -> Result<(History, Report), Error> {
    let mut rng = StdRng::seed_from_u64(seed);
    let t_start = Instant::now();
    let mut w = start(tools, dir).await?;
    tracing::info!(seed, profile = %profile.name, setup = ?t_start.elapsed(), "chaos: window opens");

    let lease = flags::hub_lease_duration(tools.root())?;
    let lease = Duration::from_secs(lease.trim_end_matches('s').parse().unwrap_or(15));
    let window_end = Instant::now() + profile.window;
    let mut n = 0usize;
    let mut deleted: Vec<JobRef> = vec![];
    let mut next_submit = Instant::now();
    let mut next_fault = Instant::now() + Duration::from_secs(rng.random_range(3..=8));
    let mut active: Option<(Fault, String, Instant)> = None;
    while Instant::now() < window_end {
        let now = Instant::now();
        if now >= next_submit {
            n += 1;
            let kind = *[
                Kind::Single,
                Kind::Single,
                Kind::Single,
                Kind::Eight,
                Kind::Gang,
                Kind::Impossible,
                Kind::PriceCapped,
            ]
            .choose(&mut rng)
            .unwrap_or(&Kind::Single);
            let ns = if rng.random_bool(0.5) {
                "team-a"
            } else {
                "team-b"
            };
            let name = format!("j{n:04}-{}", format!("{kind:?}").to_lowercase());
            let seconds = rng.random_range(5..=30);
            if let Err(e) =
                crate::hubctl::apply::<ComputeJob>(&w.hub, &manifest(kind, ns, &name, seconds))
                    .await
            {
                tracing::warn!(error = %e, job = name, "chaos: submitting");
            }
            // Now and then, delete a running job.
            if rng.random_bool(0.1) {
                let running: Vec<String> = w.recorder.running_jobs().into_iter().collect();
                if let Some(key) = running.choose(&mut rng)
                    && let Some((ns, name)) = key.split_once('/')
                {
                    let api: Api<ComputeJob> = Api::namespaced(w.hub.clone(), ns);
                    if let Ok(Some(j)) = api.get_opt(name).await {
                        deleted.push(JobRef {
                            key: key.clone(),
                            uid: j.uid().unwrap_or_default(),
                        });
                        let _ = api.delete(name, &DeleteParams::default()).await;
                    }
                }
            }
            next_submit = now + Duration::from_millis(rng.random_range(500..=3000));
        }
        match &active {
            Some((fault, target, until)) if now >= *until => {
                let (fault, target) = (*fault, target.clone());
                w.heal(fault, &target).await?;
                active = None;
                next_fault = now + Duration::from_secs(rng.random_range(2..=10));
            }
            None if now >= next_fault => {
                let fault = *Fault::ALL.choose(&mut rng).unwrap_or(&Fault::KillAgent);
                let member = *MEMBERS.choose(&mut rng).unwrap_or(&"alpha");
                let outage = fault.outage(&mut rng, lease);
                let skew = if fault == Fault::SkewClock {
                    let secs = rng.random_range(10..=120);
                    if rng.random_bool(0.5) { secs } else { -secs }
                } else {
                    0
                };
                match w.inject(fault, member, skew).await? {
                    Some(target) => active = Some((fault, target, now + outage)),
                    None => next_fault = now + Duration::from_secs(2),
                }
            }
            _ => {}
        }
        w.supervise(active.as_ref().map(|(_, target, _)| target.as_str()))?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if let Some((fault, target, _)) = active.take() {
        w.heal(fault, &target).await?;
    }
    tracing::info!(
        jobs = n,
        "chaos: window closed, healed; waiting for quiescence"
    );
    let mut wait = Quiescence::new(Instant::now(), profile);
    loop {
        match wait.observe(Instant::now(), snapshot(&w).await) {
            Wait::Quiet => break,
            Wait::GaveUp => {
                tracing::warn!(
                    jobs_left = wait.fewest,
                    "chaos: gave up waiting for quiescence (nothing ended, was placed or settled for {:?}, or the cap of {:?} passed)",
                    profile.quiesce,
                    profile.quiesce_cap
                );
                break;
            }
            Wait::Waiting => {}
        }
        w.supervise(None)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Time for the recorder's watches to see the last deletions.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let World {
        chain,
        contracts,
        recorder,
        hub,
        pool,
    } = w;
    let mut history = recorder.finish(&hub, seed, &profile.name, deleted).await?;
    let chain_events = chain.escrow_events(&contracts).await?;
    let mut payers = vec![];
    let mut locks = vec![];
    for e in &chain_events {
        match e {
            ChainEvent::Deposited { payer, .. } if !payers.contains(payer) => {
                payers.push(payer.clone())
            }
            ChainEvent::Locked { job_id, .. } => locks.push(job_id.clone()),
            _ => {}
        }
    }
    let hub_locks: Vec<String> = history
        .jobs
        .iter()
        .flat_map(|j| j.attempts.iter().filter_map(|a| a.job_id.clone()))
        .collect();
    history.escrow = Some(
        chain
            .escrow_readout(&contracts, &payers, &locks, &hub_locks)
            .await?,
    );
    history
        .events
        .extend(chain_events.into_iter().map(Event::Chain));
    let report = check(&history);
    if !report.ok() {
        // The report first: a CI log keeps the head and the tail of a failure, and the hub's logs
        // below are long.
        eprint!("{report}");
        pool.hub.dump_logs(40);
    }
    drop(pool);
    Ok((history, report))
}

/// The seed to use: `GPUFED_CHAOS_SEED` if set, else one drawn from the clock (printed by callers).
pub fn seed_from_env() -> Result<u64, Error> {
    match std::env::var("GPUFED_CHAOS_SEED") {
        Ok(s) => s
            .parse()
            .map_err(|e| Error::Other(format!("GPUFED_CHAOS_SEED={s}: {e}"))),
        Err(_) => Ok(rand::rng().random()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(left: usize, progress: (usize, usize, usize)) -> Option<Snapshot> {
        Some(Snapshot { left, progress })
    }

    #[test]
    fn a_backlog_that_drains_at_a_level_count_is_progress() {
        // Four jobs in flight at every reading while the backlog is placed: the run found in
        // the long profile, which the old fewest-left rule gave up on after 5 minutes.
        let t0 = Instant::now();
        let profile = Profile::long();
        let mut q = Quiescence::new(t0, &profile);
        for minute in 0..20u64 {
            let now = t0 + Duration::from_secs(60 * minute);
            let done = usize::try_from(minute).unwrap_or_default();
            assert_eq!(
                q.observe(now, snap(4, (done, done + 4, done))),
                Wait::Waiting
            );
        }
    }

    #[test]
    fn quiet_only_after_nothing_is_left_for_a_while() {
        let t0 = Instant::now();
        let mut q = Quiescence::new(t0, &Profile::short());
        assert_eq!(q.observe(t0, snap(0, (5, 5, 5))), Wait::Waiting);
        // One job placed in between: the quiet spell starts again.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(q.observe(t1, snap(1, (5, 6, 5))), Wait::Waiting);
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!(q.observe(t2, snap(0, (6, 6, 6))), Wait::Waiting);
        assert_eq!(q.observe(t2 + QUIET_FOR, snap(0, (6, 6, 6))), Wait::Quiet);
    }

    #[test]
    fn gives_up_without_progress_and_at_the_cap() {
        let t0 = Instant::now();
        let profile = Profile::short();
        let mut q = Quiescence::new(t0, &profile);
        assert_eq!(q.observe(t0, snap(2, (1, 3, 1))), Wait::Waiting);
        assert_eq!(
            q.observe(t0 + profile.quiesce, snap(2, (1, 3, 1))),
            Wait::GaveUp
        );
        let mut q = Quiescence::new(t0, &profile);
        let late = t0 + profile.quiesce_cap;
        assert_eq!(q.observe(late, snap(2, (9, 9, 9))), Wait::GaveUp);
        // An unreadable hub is no progress.
        let mut q = Quiescence::new(t0, &profile);
        assert_eq!(q.observe(t0 + profile.quiesce, None), Wait::GaveUp);
    }
}
