use super::run::{Misbehaviour, run_cpu};
use super::*;

const NONCE: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const ALL: [usize; GROUPS] = [0, 1, 2, 3, 4, 5, 6, 7];

fn challenge(id: &str) -> Challenge {
    Challenge::new(id, NONCE, 32).unwrap()
}

fn honest(c: &Challenge, devices: usize) -> String {
    run_cpu(c, devices, Misbehaviour::default())
        .to_line()
        .unwrap()
}

fn refusal(c: &Challenge, expected_gpus: usize, raw: &str) -> Refusal {
    verify(c, expected_gpus, 60_000, raw, &ALL)
        .result
        .unwrap_err()
}

#[test]
fn honest_answer_verifies_on_every_group() {
    let c = challenge("ch-1");
    let verdict = verify(&c, 2, 60_000, &honest(&c, 2), &ALL);
    assert_eq!(
        verdict.result,
        Ok(Verified {
            gpus: vec!["CPU-0".into(), "CPU-1".into()]
        })
    );
    assert_eq!(verdict.evidence.outcome, "verified");
    assert_eq!(verdict.evidence.checked.len(), 2 * GROUPS);
}

#[test]
fn matmul_wraps_mod_2_to_the_32() {
    let a = [u32::MAX, 2, 3, 4];
    let b = [5, 6, 7, 8];
    // row 0: (2^32-1)*5 + 2*7 = -5 + 14 = 9; (2^32-1)*6 + 2*8 = -6 + 16 = 10
    assert_eq!(matmul(&a, &b, 2), vec![9, 10, 3 * 5 + 4 * 7, 3 * 6 + 4 * 8]);
}

#[test]
fn each_gpu_gets_different_matrices() {
    let c = challenge("ch-1");
    assert_ne!(c.matrices("GPU-a"), c.matrices("GPU-b"));
    assert_ne!(cpu_digests(&c, "GPU-a"), cpu_digests(&c, "GPU-b"));
}

#[test]
fn wrong_answer_is_refused_with_the_group_that_differs() {
    let c = challenge("ch-1");
    let raw = run_cpu(
        &c,
        1,
        Misbehaviour {
            wrong: true,
            ..Default::default()
        },
    )
    .to_line()
    .unwrap();
    let verdict = verify(&c, 1, 60_000, &raw, &[3]);
    let Err(Refusal::WrongResult { uuid, group, .. }) = verdict.result else {
        panic!("{:?}", verdict.result)
    };
    assert_eq!((uuid.as_str(), group), ("CPU-0", 3));
    assert!(verdict.evidence.outcome.contains("does not match"));
    assert_eq!(verdict.evidence.checked.len(), 1);
}

#[test]
fn answer_replayed_from_another_challenge_is_refused() {
    let old = challenge("ch-old");
    let new = challenge("ch-new");
    let r = refusal(&new, 1, &honest(&old, 1));
    assert!(matches!(r, Refusal::WrongChallenge { .. }), "{r}");
    assert!(r.to_string().contains("replayed"));
}

#[test]
fn answer_with_the_right_id_but_another_nonce_fails_the_digests() {
    let old = challenge("ch-1");
    let new = Challenge::new("ch-1", &"02".repeat(32), 32).unwrap();
    assert!(matches!(
        refusal(&new, 1, &honest(&old, 1)),
        Refusal::WrongResult { .. }
    ));
}

#[test]
fn fewer_gpus_than_given_are_refused() {
    let c = challenge("ch-1");
    let r = refusal(&c, 8, &honest(&c, 1));
    assert_eq!(
        r,
        Refusal::TooFewGpus {
            expected: 8,
            got: 1
        }
    );
    assert_eq!(r.to_string(), "1 GPUs answered, the attempt was given 8");
}

#[test]
fn more_gpus_than_given_are_refused() {
    let c = challenge("ch-1");
    assert!(matches!(
        refusal(&c, 1, &honest(&c, 2)),
        Refusal::TooManyGpus {
            expected: 1,
            got: 2
        }
    ));
}

#[test]
fn one_gpu_answering_twice_is_refused() {
    let c = challenge("ch-1");
    let mut answer = run_cpu(&c, 1, Misbehaviour::default());
    answer.gpus.push(answer.gpus[0].clone());
    assert_eq!(
        refusal(&c, 2, &answer.to_line().unwrap()),
        Refusal::DuplicateGpu("CPU-0".into())
    );
}

#[test]
fn too_slow_is_refused() {
    let c = challenge("ch-1");
    let mut answer = run_cpu(&c, 1, Misbehaviour::default());
    answer.gpus[0].ms = 1_001;
    let verdict = verify(&c, 1, 1_000, &answer.to_line().unwrap(), &ALL);
    assert_eq!(
        verdict.result,
        Err(Refusal::TooSlow {
            uuid: "CPU-0".into(),
            ms: 1_001,
            max_ms: 1_000
        })
    );
}

#[test]
fn a_real_delay_shows_in_the_measured_time() {
    let c = challenge("ch-1");
    let answer = run_cpu(
        &c,
        1,
        Misbehaviour {
            delay: std::time::Duration::from_millis(30),
            ..Default::default()
        },
    );
    assert!(answer.gpus[0].ms >= 30);
    assert!(matches!(
        verify(&c, 1, 29, &answer.to_line().unwrap(), &ALL).result,
        Err(Refusal::TooSlow { .. })
    ));
}

#[test]
fn malformed_answers_are_refused_with_the_reason() {
    let c = challenge("ch-1");
    for (raw, says) in [
        ("", "EOF"),
        ("not json", "expected"),
        (r#"{"v":1,"id":"ch-1"}"#, "missing field `gpus`"),
        (r#"{"v":1,"id":"ch-1","gpus":[],"x":1}"#, "unknown field"),
        (
            r#"{"v":1,"id":"ch-1","gpus":[{"uuid":"CPU-0","ms":1,"d":"zz"}]}"#,
            "not hex",
        ),
        (
            r#"{"v":1,"id":"ch-1","gpus":[{"uuid":"CPU-0","ms":1,"d":"00ff"}]}"#,
            "2 digest bytes, expected 64",
        ),
        (
            r#"{"v":1,"id":"ch-1","gpus":[{"uuid":"","ms":1,"d":""}]}"#,
            "empty uuid",
        ),
    ] {
        let r = refusal(&c, 1, raw);
        assert!(matches!(r, Refusal::Malformed(_)), "{raw}: {r}");
        assert!(r.to_string().contains(says), "{raw}: {r}");
    }
}

#[test]
fn another_protocol_version_is_refused() {
    let c = challenge("ch-1");
    let raw = honest(&c, 1).replacen(r#""v":1"#, r#""v":2"#, 1);
    assert_eq!(refusal(&c, 1, &raw), Refusal::UnsupportedVersion(2));
}

#[test]
fn oversize_answer_is_refused_and_cut_in_the_evidence() {
    let c = challenge("ch-1");
    let raw = format!("{}{}", honest(&c, 1), " ".repeat(MAX_ANSWER_BYTES));
    let verdict = verify(&c, 1, 60_000, &raw, &ALL);
    assert_eq!(verdict.result, Err(Refusal::Oversize(raw.len())));
    assert_eq!(verdict.evidence.received.len(), MAX_ANSWER_BYTES);
}

#[test]
fn sixteen_gpus_fit_in_a_termination_message() {
    let c = Challenge::new(&"c".repeat(63), NONCE, 8).unwrap();
    let mut answer = run_cpu(&c, 16, Misbehaviour::default());
    for g in &mut answer.gpus {
        g.uuid = "GPU-12345678-1234-1234-1234-123456789abc".into();
        g.ms = 3_600_000;
    }
    assert!(answer.to_line().unwrap().len() <= MAX_ANSWER_BYTES);
}

#[test]
fn skipped_work_is_caught_when_the_hub_checks_the_skipped_group() {
    // A member computes every group but 5 and guesses that one: it passes only if the hub, drawing
    // after the answer, does not pick group 5.
    let c = challenge("ch-1");
    let mut answer = run_cpu(&c, 1, Misbehaviour::default());
    let mut digests = answer.gpus[0].digests().unwrap();
    digests[5] = [0; DIGEST_BYTES];
    answer.gpus[0] = GpuAnswer::new("CPU-0", answer.gpus[0].ms, &digests);
    let raw = answer.to_line().unwrap();
    assert!(verify(&c, 1, 60_000, &raw, &[1, 2]).result.is_ok());
    assert!(matches!(
        verify(&c, 1, 60_000, &raw, &[2, 5]).result,
        Err(Refusal::WrongResult { group: 5, .. })
    ));
}

#[test]
fn expected_group_matches_the_full_product() {
    let c = challenge("ch-1");
    let all = cpu_digests(&c, "GPU-x");
    for (g, d) in all.iter().enumerate() {
        assert_eq!(&c.expected_group("GPU-x", g), d);
    }
}

#[test]
fn evidence_hash_is_stable_and_depends_on_the_outcome() {
    let c = challenge("ch-1");
    let raw = honest(&c, 1);
    let a = verify(&c, 1, 60_000, &raw, &[0]).evidence;
    let b = verify(&c, 1, 60_000, &raw, &[0]).evidence;
    assert_eq!(a.sha256(), b.sha256());
    assert_eq!(a.sha256().len(), 64);
    let failed = verify(&c, 2, 60_000, &raw, &[0]).evidence;
    assert_ne!(a.sha256(), failed.sha256());
    let round: Evidence = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    assert_eq!(round.sha256(), a.sha256());
}

#[test]
fn bad_challenges_are_refused() {
    assert_eq!(Challenge::new("c", "00", 32), Err(ChallengeError::BadNonce));
    assert_eq!(
        Challenge::new("c", NONCE, 30),
        Err(ChallengeError::BadSize(30))
    );
    assert_eq!(
        Challenge::new("c", NONCE, 0),
        Err(ChallengeError::BadSize(0))
    );
    assert_eq!(Challenge::new("", NONCE, 8), Err(ChallengeError::BadId));
}

#[test]
fn profiles_have_a_bound_and_say_how_they_were_measured() {
    for p in profile::PROFILES {
        assert!(p.max_ms > 0, "{p:?}");
        assert!(p.measured_with.contains("gpu-probe challenge"), "{p:?}");
    }
    assert!(profile_for("cpu", 256).is_some());
    assert!(profile_for("H100", 256).is_none());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever arrives, the check answers with a verdict (never panics) and refuses it.
        #[test]
        fn arbitrary_text_is_refused_without_panicking(raw in ".{0,600}") {
            let c = challenge("ch-1");
            let verdict = verify(&c, 1, 60_000, &raw, &ALL);
            prop_assert!(verdict.result.is_err());
            prop_assert_eq!(verdict.evidence.sha256().len(), 64);
        }

        /// Changing any one digest character of an honest answer is caught when every group is
        /// checked.
        #[test]
        fn any_changed_digest_character_is_caught(pos in 0usize..(GROUPS * DIGEST_BYTES * 2), hex_digit in 0u8..16) {
            let c = challenge("ch-1");
            let mut answer = run_cpu(&c, 1, Misbehaviour::default());
            let mut d: Vec<u8> = answer.gpus[0].d.bytes().collect();
            let new = b"0123456789abcdef"[usize::from(hex_digit)];
            prop_assume!(d[pos] != new);
            d[pos] = new;
            answer.gpus[0].d = String::from_utf8(d).unwrap();
            let verdict = verify(&c, 1, 60_000, &answer.to_line().unwrap(), &ALL);
            let caught = matches!(verdict.result, Err(Refusal::WrongResult { group, .. }) if group == pos / (DIGEST_BYTES * 2));
            prop_assert!(caught);
        }
    }
}

#[test]
fn the_cpu_backend_answers_for_the_gpu_uuids_the_device_plugin_gave_the_container() {
    use super::run::{device_names, run_cpu_as};
    assert_eq!(device_names(2, None), vec!["CPU-0", "CPU-1"]);
    assert_eq!(
        device_names(2, Some("GPU-aa, GPU-bb,GPU-cc")),
        vec!["GPU-aa", "GPU-bb"]
    );
    assert_eq!(device_names(2, Some("GPU-aa")), vec!["GPU-aa", "CPU-1"]);
    for nothing in ["all", "none", "void", "0,1", ""] {
        assert_eq!(device_names(1, Some(nothing)), vec!["CPU-0"], "{nothing}");
    }
    let c = challenge("j-1");
    let names = device_names(2, Some("GPU-aa,GPU-bb"));
    let answer = run_cpu_as(&c, &names, Default::default());
    let ok = verify(&c, 2, 60_000, &answer.to_line().unwrap(), &ALL)
        .result
        .unwrap();
    assert_eq!(ok.gpus, vec!["GPU-aa", "GPU-bb"]);
}
