//! Result checks of tenant jobs by replication (docs/adr/0034-result-checks-by-replication.md):
//! a job that declares a deterministic result asks the hub to run it again on another member and
//! compare; a mismatch is settled by a third run on a member that ran neither.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Label on a check run (a ComputeJob the hub made) holding the UID of the job it checks.
pub const LABEL_RESULT_CHECK_OF: &str = "gpufed.io/result-check-of";
/// Label on a check run: `replica` or `referee`.
pub const LABEL_RESULT_CHECK_ROLE: &str = "gpufed.io/result-check-role";

/// What a job asks of the hub's result check (`ComputeJob.spec.resultCheck`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResultCheck {
    /// Compare the sha256 and size of every output the template stores (`template.outputs`), as
    /// well as the termination messages. Default true; set false when outputs carry something
    /// that differs from run to run (a timestamp, a log).
    #[serde(default = "default_true")]
    pub include_outputs: bool,
}

fn default_true() -> bool {
    true
}

impl Default for ResultCheck {
    /// As `resultCheck: {}` reads.
    fn default() -> Self {
        ResultCheck {
            include_outputs: default_true(),
        }
    }
}

/// Where a job's result check stands.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum ResultCheckPhase {
    /// The job has not succeeded yet.
    #[default]
    Waiting,
    /// The job succeeded; its replica runs on another member.
    Replicating,
    /// The job and its replica agree: the result is confirmed by two members.
    Agreed,
    /// The two results differ: a referee runs on a member that ran neither.
    Refereeing,
    /// The referee agreed with one of the two: the other member lost the dispute.
    Resolved,
    /// The referee agreed with neither: three members gave three results (the job is not
    /// deterministic, or more than one member is wrong). Nobody is blamed.
    Inconclusive,
    /// No verdict: the job's succeeded attempt has nothing to compare (no termination message and
    /// no output), a check run failed or was deleted, or could not be made.
    Abandoned,
}

impl ResultCheckPhase {
    /// Whether nothing more will happen to the check.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ResultCheckPhase::Agreed
                | ResultCheckPhase::Resolved
                | ResultCheckPhase::Inconclusive
                | ResultCheckPhase::Abandoned
        )
    }
}

/// Which run of a check.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RunRole {
    /// The job itself.
    Original,
    /// The second run, on another member.
    Replica,
    /// The third run, on a member that ran neither, after the two disagreed.
    Referee,
}

impl RunRole {
    /// The role's label value and name suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            RunRole::Original => "original",
            RunRole::Replica => "replica",
            RunRole::Referee => "referee",
        }
    }
}

/// One run of a result check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResultRun {
    /// Which run.
    pub role: RunRole,
    /// The ComputeJob (same namespace as the checked job).
    #[schemars(length(max = 253))]
    pub job: String,
    /// Its UID when the hub made it: a ComputeJob of that name with another UID is not the run.
    #[schemars(length(max = 64))]
    pub uid: String,
    /// The member the succeeded attempt ran on (absent until it succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub cluster: Option<String>,
    /// The succeeded attempt's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// sha256 (hex) of the canonical result: the workload containers' termination messages per
    /// replica and container, and the outputs' sha256 and size when `includeOutputs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub digest: Option<String>,
}

/// Observed state of a job's result check (`ComputeJob.status.resultCheck`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResultCheckStatus {
    /// Where the check stands.
    #[serde(default)]
    pub phase: ResultCheckPhase,
    /// The runs so far: the job itself, then its replica, then the referee.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub runs: Vec<ResultRun>,
    /// `Resolved`: the member whose result the two others contradict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub loser: Option<String>,
    /// `Resolved` and `Inconclusive`: ConfigMap in the hub's jobs namespace holding the evidence
    /// record (every run's member, attempt and result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub evidence: Option<String>,
    /// sha256 (hex) of the evidence record: the key of a slash that follows a lost dispute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub evidence_sha256: Option<String>,
    /// Why, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    /// When the check reached its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_result_check_compares_outputs_too() {
        let read: ResultCheck = serde_json::from_str("{}").unwrap();
        assert_eq!(read, ResultCheck::default());
        assert!(read.include_outputs);
    }
}
