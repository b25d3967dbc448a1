//! The `make demo` scenario, run as a test (short simulated run times, processes tied to the test)
//! so the demo cannot rot: every step must happen as the narration says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use gpufed_e2e::demo::{DemoConfig, JOBS, REAL_JOB, run};
use gpufed_e2e::wait_until;
use gpufed_e2e::{Tools, run_test};

/// The most a test here may take, start-up included: past it the test fails and its
/// components are killed (see [`run_test`]).
const HARD_DEADLINE: Duration = Duration::from_secs(600);

#[test]
fn the_demo_places_runs_explains_and_pays_as_it_narrates() {
    run_test(HARD_DEADLINE, || async {
        let tools = Tools::locate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = DemoConfig {
            dir: dir.path().to_path_buf(),
            sim_duration: Duration::from_secs(6),
            step_timeout: Duration::from_secs(180),
        };
        let mut out: Vec<u8> = vec![];
        let result = run(&tools, &cfg, &mut out).await;
        let text = String::from_utf8_lossy(&out).to_string();
        if std::env::var_os("GPUFED_E2E_SHOW").is_some() {
            eprintln!("{text}");
        }
        let demo = result.unwrap_or_else(|e| panic!("{e}\n--- narration so far ---\n{text}"));
        let r = &demo.report;

        // Every job went where the narration says, and the one that cannot fit says why.
        for (_, key, expected) in JOBS {
            if let Some(cluster) = expected {
                assert_eq!(
                    r.placed.get(key).map(String::as_str),
                    Some(cluster),
                    "{key}"
                );
                assert!(r.gpu_seconds[key] > 0, "{key} used no GPU-seconds");
            }
        }
        let (_, why) = r.pending.as_ref().unwrap();
        assert!(why.contains("alpha: price 2.40 > max 1.00"), "{why}");
        assert!(why.contains("beta: no H100 (has A100)"), "{why}");

        // Money moved: each provider earned, the treasury took fees, payers paid; and it adds up.
        let change = |label: &str| -> String {
            r.balances
                .iter()
                .find(|b| b.0.starts_with(label))
                .unwrap()
                .3
                .clone()
        };
        for provider in ["alpha", "beta", "gamma"] {
            assert!(
                change(provider).starts_with('+') && change(provider) != "+0.00",
                "{provider}: {}",
                change(provider)
            );
        }
        assert!(change("pool treasury").starts_with('+'));
        assert!(change("team-a payer").starts_with('-'));
        assert!(change("team-b payer").starts_with('-'));
        let amount = |s: &str| s[1..].parse::<gpufed_crds::TokenAmount>().unwrap().atto();
        let earned: u128 = ["alpha", "beta", "gamma", "pool treasury"]
            .iter()
            .map(|l| amount(&change(l)))
            .sum();
        let spent: u128 = ["team-a payer", "team-b payer"]
            .iter()
            .map(|l| amount(&change(l)))
            .sum();
        assert_eq!(
            earned, spent,
            "what payers spent is exactly what providers and the treasury received"
        );
        let paid: u128 = r
            .paid
            .values()
            .map(|p| p.parse::<gpufed_crds::TokenAmount>().unwrap().atto())
            .sum();
        assert_eq!(paid, spent);

        // Each paid attempt's usage receipt, signed by the hub, was kept on its provider's cluster by
        // the agent, where `kubectl gpufed claim --from-configmap` finds it (already settled).
        let kept = |m: &gpufed_e2e::Cluster| {
            let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                kube::Api::namespaced(m.client(), "gpufed-jobs");
            async move {
                api.get_opt("gpufed-usage-receipts")
                    .await
                    .ok()
                    .flatten()
                    .and_then(|c| c.data)
                    .unwrap_or_default()
            }
        };
        wait_until(
            Duration::from_secs(60),
            "every receipt kept on a member",
            || async {
                let mut n = 0;
                for m in &demo.pool.members {
                    n += kept(m).await.len();
                }
                (n == r.paid.len()).then_some(())
            },
        )
        .await
        .unwrap();
        for m in &demo.pool.members {
            for raw in kept(m).await.values() {
                let receipt: gpufed_crds::ClaimableReceipt = serde_json::from_str(raw).unwrap();
                assert_eq!(
                    receipt.receipt.signer.to_lowercase(),
                    gpufed_e2e::chain::accounts::HUB.1.to_lowercase()
                );
            }
        }
        let alpha = demo.pool.member("alpha").unwrap();
        let key_file = dir.path().join("alpha-gas.key");
        std::fs::write(&key_file, gpufed_e2e::chain::accounts::ALPHA.0).unwrap();
        let out = std::process::Command::new(tools.workspace_bin("kubectl-gpufed").unwrap())
            .args([
                "--kubeconfig",
                &alpha.kubeconfig().display().to_string(),
                "-n",
                "gpufed-jobs",
            ])
            .args(["claim", "--from-configmap", "--dry-run", "--key-file"])
            .arg(&key_file)
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{shown}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !shown.is_empty()
                && shown
                    .lines()
                    .all(|l| l.ends_with("already settled: skipped")),
            "{shown}"
        );

        // The job on gamma's real node really ran: its log came from the kubelet.
        assert!(r.real_log.contains(REAL_JOB.1), "real log: {}", r.real_log);
        assert_eq!(r.placed[REAL_JOB.0], "gamma");

        // Every "Try:" line works as printed, in a new shell that has only what the lines set.
        let block = text.split("Try:\n").nth(1).unwrap();
        let lines: Vec<&str> = block
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        assert!(lines.len() >= 6, "{block}");
        let (setup, commands) = lines.split_at(2);
        for command in commands {
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("{}\n{}\n{command}", setup[0], setup[1]))
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("HOME", std::env::var("HOME").unwrap_or_default())
                .current_dir("/")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "`{command}` failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        // The narration shows the real kubectl and plugin output it promises.
        for needle in [
            "━━━ 9/9",
            "hello from a real container on ",
            "$ kubectl get memberclusters",
            "$ kubectl gpufed explain too-cheap",
            "$ kubectl gpufed payments finetune-llama",
            "make demo-down",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    });
}
