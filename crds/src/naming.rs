//! Deterministic names shared by the hub and the member agent.
//!
//! Both sides must compute the same names without talking to each other: the hub names the
//! `Placement` of an attempt, the agent names the local `batch/v1` Job it creates for it, and a
//! restarted process must find what it created before. Names carry the job UID (hashed, so they
//! stay short) and the attempt number, so a stale attempt can never be mistaken for the current one.

use sha2::{Digest, Sha256};

/// Prefix of the hub namespace that holds one member's Placements and heartbeat Lease.
pub const MEMBER_NAMESPACE_PREFIX: &str = "gpufed-member-";
/// Longest MemberCluster name: the member namespace `gpufed-member-<name>` must be a DNS label (63).
pub const MAX_MEMBER_NAME_LEN: usize = 63 - MEMBER_NAMESPACE_PREFIX.len();

/// Label carrying the ComputeJob UID, on Placements and on the member's Jobs and Pods: the one
/// identity of a job a member sees (its namespace and name stay on the hub; ADR 0037).
pub const LABEL_JOB_UID: &str = "gpufed.io/job-uid";
/// Label carrying the attempt number.
pub const LABEL_ATTEMPT: &str = "gpufed.io/attempt";
/// Label naming the member cluster.
pub const LABEL_CLUSTER: &str = "gpufed.io/cluster";
/// Label naming the placement that a local Job runs.
pub const LABEL_PLACEMENT: &str = "gpufed.io/placement";
/// Node label with the normalised GPU model (written by gpu-probe, used as node selector).
pub const LABEL_GPU_MODEL: &str = "gpufed.io/gpu-model";
/// Node label with the GPU memory in MiB (written by gpu-probe).
pub const LABEL_GPU_MEMORY_MIB: &str = "gpufed.io/gpu-memory-mib";
/// Node label with the region of the node's cluster.
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
/// Annotation the hub puts on a Placement whose attempt ended in a pool with a chain: the signed
/// usage receipt ([`ClaimableReceipt`](crate::ClaimableReceipt) as JSON) its provider can submit
/// to `JobEscrow.claim` itself (`kubectl gpufed claim`) if the hub is late or gone.
pub const ANNOTATION_USAGE_RECEIPT: &str = "gpufed.io/usage-receipt";
/// Hub namespace of the ComputeJobs the hub sends members to verify their GPUs (ADR 0027). It
/// never reaches a member: Placements carry only the job's UID (ADR 0037).
pub const HUB_JOBS_NAMESPACE: &str = "gpufed-hub-jobs";
/// Label on a hub ComputeJob (never copied to its Placement) naming the member it verifies.
pub const LABEL_VERIFIES: &str = "gpufed.io/verifies";
/// The extended resource that GPUs are requested with.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Label on everything the operator creates.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "gpufed";

/// The hub namespace of a member cluster: `gpufed-member-<name>`.
pub fn member_namespace(cluster: &str) -> String {
    format!("{MEMBER_NAMESPACE_PREFIX}{cluster}")
}

/// The member name behind a hub member namespace, if it is one.
pub fn member_of_namespace(namespace: &str) -> Option<&str> {
    namespace
        .strip_prefix(MEMBER_NAMESPACE_PREFIX)
        .filter(|n| !n.is_empty())
}

/// Name of the heartbeat Lease of a member (in its member namespace on the hub).
pub fn heartbeat_lease_name(cluster: &str) -> String {
    format!("{cluster}-heartbeat")
}

/// Name of the hub ServiceAccount (and Role, RoleBinding) that a member's agent acts as.
pub fn member_service_account(cluster: &str) -> String {
    format!("gpufed-agent-{cluster}")
}

/// Name of the hub ClusterRole (and binding) that lets a member touch its own MemberCluster.
pub fn member_cluster_role(cluster: &str) -> String {
    format!("gpufed-member-{cluster}")
}

/// Name of the hub Secret holding the kubeconfig the member's owner passes to the member chart.
pub fn member_kubeconfig_secret(cluster: &str) -> String {
    format!("gpufed-member-{cluster}-kubeconfig")
}

/// First `n` hex digits of SHA-256 of `input`.
pub fn short_hash(input: &str, n: usize) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex.truncate(n);
    hex
}

/// Name of the Placement for `attempt` of a ComputeJob: `gpufed-<hash of the job UID>-<attempt>`,
/// the name of the local Job it becomes on the member ([`local_job_name`]). Nothing in it comes
/// from the job's namespace or name: a member sees an opaque identity for every job, a tenant's
/// or one of the hub's challenges alike (docs/adr/0037-members-see-opaque-job-identities.md).
pub fn placement_name(job_uid: &str, attempt: u32) -> String {
    local_job_name(job_uid, attempt)
}

/// Name of the local `batch/v1` Job a member creates for a placement: `gpufed-<hash>-<attempt>`,
/// a DNS label short enough for the `job-name` pod label. Deterministic, so a restarted agent finds
/// the Job it made and never makes a second one.
pub fn local_job_name(job_uid: &str, attempt: u32) -> String {
    format!("gpufed-{}-{attempt}", short_hash(job_uid, 16))
}

/// The chain job id of an attempt as 32 bytes: keccak256 of the UID bytes followed by the attempt
/// as a big-endian u32. The hub and anyone auditing the chain compute the same id.
pub fn chain_job_id(job_uid: &str, attempt: u32) -> [u8; 32] {
    use sha3::{Digest as _, Keccak256};
    let mut hasher = Keccak256::new();
    hasher.update(job_uid.as_bytes());
    hasher.update(attempt.to_be_bytes());
    hasher.finalize().into()
}

/// [`chain_job_id`] as `0x`-prefixed hex.
pub fn chain_job_id_hex(job_uid: &str, attempt: u32) -> String {
    let mut s = String::from("0x");
    for b in chain_job_id(job_uid, attempt) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "5f1d2c3b-aaaa-bbbb-cccc-0123456789ab";

    #[test]
    fn placement_names_are_stable_opaque_and_carry_the_attempt() {
        let a1 = placement_name(UID, 1);
        assert_eq!(a1, placement_name(UID, 1));
        assert_ne!(a1, placement_name(UID, 2));
        assert!(a1.ends_with("-1"));
        assert_eq!(a1, local_job_name(UID, 1));
        let other_uid = "00000000-aaaa-bbbb-cccc-0123456789ab";
        assert_ne!(a1, placement_name(other_uid, 1));
        assert!(!a1.contains(&UID[..8]), "{a1}");
    }

    #[test]
    fn local_job_names_are_dns_labels() {
        let n = local_job_name(UID, 3);
        assert!(n.len() <= 63);
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_eq!(n, local_job_name(UID, 3));
        assert_ne!(n, local_job_name(UID, 4));
    }

    #[test]
    fn member_namespace_round_trips() {
        assert_eq!(member_namespace("alpha"), "gpufed-member-alpha");
        assert_eq!(member_of_namespace("gpufed-member-alpha"), Some("alpha"));
        assert_eq!(member_of_namespace("gpufed-member-"), None);
        assert_eq!(member_of_namespace("default"), None);
        assert_eq!(MAX_MEMBER_NAME_LEN, 49);
    }

    #[test]
    fn chain_job_ids_depend_on_uid_and_attempt() {
        let a = chain_job_id_hex(UID, 1);
        assert_eq!(a.len(), 66);
        assert_ne!(a, chain_job_id_hex(UID, 2));
        // keccak256("" ++ [0,0,0,0]) is a fixed value; guards against swapping in SHA-3.
        assert_eq!(
            chain_job_id_hex("", 0),
            "0xe8e77626586f73b955364c7b4bbf0bb7f7685ebd40e852b164633a4acbd3244c"
        );
    }
}
