//! `kubectl gpufed join NAME`: the exact commands a cluster owner runs to connect a MemberCluster
//! that has joined its pool — copy the hub-made kubeconfig into a Secret on their cluster and
//! `helm install` the member chart (values `cluster` and `hub.kubeconfigSecret` of
//! `charts/gpufed-member`).
//!
//! The kubeconfig holds the member's hub token, so it is never printed: it goes to the file named
//! by `--kubeconfig-out`, or the output says how to fetch it.

use gpufed_crds::MemberCluster;
use gpufed_crds::conditions::{self, member as mc};
use gpufed_crds::naming::{member_kubeconfig_secret, member_namespace};
use kube::ResourceExt;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::shell_quote;

/// Key of the kubeconfig in the hub's Secret (and in the member's copy).
pub const KUBECONFIG_KEY: &str = "kubeconfig";

/// Choices of the owner's side, from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinOptions {
    /// Namespace the member chart goes into on the member cluster.
    pub member_namespace: String,
    /// Secret to create there (`hub.kubeconfigSecret`).
    pub secret_name: String,
    /// The chart to install.
    pub chart: String,
    /// Where the kubeconfig was written, if it was.
    pub kubeconfig_file: Option<String>,
    /// `--kubeconfig`/`--context` flags that reach the hub, repeated in the fetch command.
    pub hub_flags: Vec<String>,
}

/// What `join` prints; also its `-o json|yaml` output (no secret in it).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JoinPlan {
    /// The MemberCluster.
    pub cluster: String,
    /// Its pool.
    pub pool: String,
    /// Namespace of the kubeconfig Secret on the hub.
    pub hub_namespace: String,
    /// Name of the kubeconfig Secret on the hub.
    pub hub_secret: String,
    /// The file the kubeconfig was written to, if any.
    pub kubeconfig_file: Option<String>,
    /// Command (against the hub) that saves the kubeconfig, when it was not written.
    pub fetch_command: Option<String>,
    /// Commands the owner runs against the member cluster, in order.
    pub commands: Vec<String>,
}

/// Fails with the Joined condition's message unless `member` has joined.
pub fn check_joined(member: &MemberCluster) -> Result<()> {
    let conds = member
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    if conditions::is_true(conds, mc::JOINED) {
        return Ok(());
    }
    let why = match conditions::find(conds, mc::JOINED) {
        Some(c) => format!("{} ({})", c.message, c.reason),
        None => "the hub has not registered it yet (no Joined condition): is the hub running?"
            .to_string(),
    };
    Err(Error::NotJoined {
        name: member.name_any(),
        why,
    })
}

/// Namespace and name of the Secret on the hub holding `member`'s kubeconfig.
pub fn hub_secret(member: &MemberCluster) -> (String, String) {
    let name = member.name_any();
    let status = member.status.as_ref();
    (
        status
            .and_then(|s| s.namespace.clone())
            .unwrap_or_else(|| member_namespace(&name)),
        status
            .and_then(|s| s.credentials_secret.clone())
            .unwrap_or_else(|| member_kubeconfig_secret(&name)),
    )
}

/// The plan for a joined `member`.
pub fn plan(member: &MemberCluster, opts: &JoinOptions) -> JoinPlan {
    let name = member.name_any();
    let (hub_namespace, hub_secret) = hub_secret(member);
    let file = opts
        .kubeconfig_file
        .clone()
        .unwrap_or_else(|| format!("{name}-hub.kubeconfig"));
    let fetch_command = opts.kubeconfig_file.is_none().then(|| {
        let flags: String = opts.hub_flags.iter().map(|f| format!(" {}", shell_quote(f))).collect();
        format!(
            "kubectl{flags} -n {} get secret {} -o jsonpath='{{.data.{KUBECONFIG_KEY}}}' | base64 -d > {}",
            shell_quote(&hub_namespace),
            shell_quote(&hub_secret),
            shell_quote(&file)
        )
    });
    let ns = shell_quote(&opts.member_namespace);
    let secret = shell_quote(&opts.secret_name);
    let commands = vec![
        format!("kubectl create namespace {ns}"),
        format!(
            "kubectl -n {ns} create secret generic {secret} --from-file={KUBECONFIG_KEY}={}",
            shell_quote(&file)
        ),
        format!(
            "helm install gpufed-member {} --namespace {ns} --set cluster={} --set hub.kubeconfigSecret={secret}",
            shell_quote(&opts.chart),
            shell_quote(&name)
        ),
    ];
    JoinPlan {
        cluster: name,
        pool: member.spec.pool.clone(),
        hub_namespace,
        hub_secret,
        kubeconfig_file: opts.kubeconfig_file.clone(),
        fetch_command,
        commands,
    }
}

/// The instructions, for a terminal.
pub fn render(plan: &JoinPlan) -> String {
    let name = &plan.cluster;
    let mut out = format!(
        "{name} has joined pool {:?}; its hub credentials are in Secret {}/{} on the hub.\n",
        plan.pool, plan.hub_namespace, plan.hub_secret
    );
    match (&plan.kubeconfig_file, &plan.fetch_command) {
        (Some(file), _) => out.push_str(&format!(
            "Wrote its hub kubeconfig to {file} (mode 0600). It holds {name}'s hub token: keep it secret and delete it once the Secret below exists.\n"
        )),
        (None, Some(fetch)) => out.push_str(&format!(
            "Its hub kubeconfig holds a token, so it is not printed. Save it with --kubeconfig-out FILE, or run against the hub:\n\n  {fetch}\n"
        )),
        (None, None) => {}
    }
    out.push_str(&format!(
        "\nThe owner of {name} runs, against the {name} cluster (their own kubeconfig and context), from a gpufed checkout:\n\n"
    ));
    for c in &plan.commands {
        out.push_str(&format!("  {c}\n"));
    }
    out.push_str(&format!(
        "\nThen `kubectl gpufed members {name}` on the hub shows it Ready after its agent's first heartbeat.\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{cond, node, ready_member};
    use gpufed_crds::testing::member;

    fn opts(file: Option<&str>) -> JoinOptions {
        JoinOptions {
            member_namespace: "gpufed-system".into(),
            secret_name: "gpufed-hub-kubeconfig".into(),
            chart: "charts/gpufed-member".into(),
            kubeconfig_file: file.map(str::to_string),
            hub_flags: vec!["--context".into(), "hub".into()],
        }
    }

    fn alpha() -> MemberCluster {
        ready_member(
            member("alpha", "H100", "2.40").build(),
            vec![node("a-0", "H100", 8, 8)],
        )
    }

    #[test]
    fn a_joined_member_gets_the_secret_and_helm_commands_with_the_written_file() {
        let m = alpha();
        check_joined(&m).unwrap();
        let out = render(&plan(&m, &opts(Some("/tmp/alpha.kubeconfig"))));
        assert_eq!(
            out,
            "\
alpha has joined pool \"default\"; its hub credentials are in Secret gpufed-member-alpha/gpufed-member-alpha-kubeconfig on the hub.
Wrote its hub kubeconfig to /tmp/alpha.kubeconfig (mode 0600). It holds alpha's hub token: keep it secret and delete it once the Secret below exists.

The owner of alpha runs, against the alpha cluster (their own kubeconfig and context), from a gpufed checkout:

  kubectl create namespace gpufed-system
  kubectl -n gpufed-system create secret generic gpufed-hub-kubeconfig --from-file=kubeconfig=/tmp/alpha.kubeconfig
  helm install gpufed-member charts/gpufed-member --namespace gpufed-system --set cluster=alpha --set hub.kubeconfigSecret=gpufed-hub-kubeconfig

Then `kubectl gpufed members alpha` on the hub shows it Ready after its agent's first heartbeat.
"
        );
    }

    #[test]
    fn without_an_output_file_the_token_is_not_printed_but_how_to_fetch_it_is() {
        let p = plan(&alpha(), &opts(None));
        assert_eq!(
            p.fetch_command.as_deref(),
            Some(
                "kubectl --context hub -n gpufed-member-alpha get secret gpufed-member-alpha-kubeconfig -o jsonpath='{.data.kubeconfig}' | base64 -d > alpha-hub.kubeconfig"
            )
        );
        assert!(p.commands[1].ends_with("--from-file=kubeconfig=alpha-hub.kubeconfig"));
        let out = render(&p);
        assert!(
            out.contains("so it is not printed. Save it with --kubeconfig-out FILE"),
            "{out}"
        );
    }

    #[test]
    fn a_member_that_has_not_joined_says_why() {
        let mut m = alpha();
        if let Some(s) = m.status.as_mut() {
            s.conditions[0] = cond(
                "Joined",
                false,
                "PoolNotFound",
                "GpuPool \"default\" does not exist",
                5,
            );
        }
        let e = check_joined(&m).unwrap_err().to_string();
        assert_eq!(
            e,
            "membercluster \"alpha\" has not joined yet: GpuPool \"default\" does not exist (PoolNotFound)"
        );
        let fresh = member("beta", "A100", "1.20").build();
        let e = check_joined(&fresh).unwrap_err().to_string();
        assert!(e.contains("no Joined condition"), "{e}");
    }

    #[test]
    fn odd_paths_are_shell_quoted_and_the_plan_serialises_without_secrets() {
        let p = plan(&alpha(), &opts(Some("my dir/alpha.kubeconfig")));
        assert!(p.commands[1].ends_with("--from-file=kubeconfig='my dir/alpha.kubeconfig'"));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["hubSecret"], "gpufed-member-alpha-kubeconfig");
        assert_eq!(v["commands"].as_array().unwrap().len(), 3);
        assert!(v["fetchCommand"].is_null());
    }
}
