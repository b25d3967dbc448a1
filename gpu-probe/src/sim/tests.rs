//! Tests of the simulator: determinism, variety, physical bounds and fault injection.

use proptest::prelude::*;

use super::*;

fn h100() -> &'static SimProfile {
    profile("H100-SXM-80GB").unwrap()
}

#[test]
fn the_same_seed_node_and_time_give_the_same_reading() {
    let a = SimBackend::new(h100(), 8, 42, "kwok-node-1", 0.0);
    let b = SimBackend::new(h100(), 8, 42, "kwok-node-1", 0.0);
    let t = 1_750_000_000.25;
    assert_eq!(a.read_at(t), b.read_at(t));
}

#[test]
fn different_nodes_and_seeds_give_different_gpus() {
    let a = SimBackend::new(h100(), 8, 42, "kwok-node-1", 0.0).read_at(1000.0);
    let b = SimBackend::new(h100(), 8, 42, "kwok-node-2", 0.0).read_at(1000.0);
    let c = SimBackend::new(h100(), 8, 43, "kwok-node-1", 0.0).read_at(1000.0);
    assert_ne!(a[0].uuid, b[0].uuid);
    assert_ne!(a[0].uuid, c[0].uuid);
    let utils = |r: &[GpuReading]| r.iter().map(|g| g.utilization_percent).collect::<Vec<_>>();
    assert_ne!(utils(&a), utils(&b));
}

#[test]
fn uuids_are_unique_per_node_and_shaped_like_nvidias() {
    let gpus = SimBackend::new(h100(), 8, 7, "n", 0.0).read_at(0.0);
    let uuids: BTreeSet<_> = gpus.iter().map(|g| g.uuid.clone()).collect();
    assert_eq!(uuids.len(), 8);
    for u in uuids {
        assert!(u.starts_with("GPU-") && u.len() == 40, "{u}");
    }
}

#[test]
fn figures_change_over_time_but_smoothly() {
    let gpu = SimGpu::new(h100(), node_seed(1, "n"), 0, 0.0);
    let over_an_hour: BTreeSet<u32> = (0..360)
        .map(|i| gpu.reading_at(f64::from(i) * 10.0).utilization_percent)
        .collect();
    assert!(over_an_hour.len() > 10, "{over_an_hour:?}");
    for i in 0..1000 {
        let t = f64::from(i);
        let now = i64::from(gpu.reading_at(t).utilization_percent);
        let next = i64::from(gpu.reading_at(t + 1.0).utilization_percent);
        assert!((now - next).abs() <= 5, "jump at t={t}: {now} -> {next}");
    }
}

#[test]
fn memory_and_power_follow_utilisation() {
    let gpu = SimGpu::new(h100(), node_seed(3, "n"), 0, 0.0);
    let mut readings: Vec<GpuReading> = (0..2000)
        .map(|i| gpu.reading_at(f64::from(i) * 17.0))
        .collect();
    readings.sort_by_key(|r| r.utilization_percent);
    let low = &readings[..200];
    let high = &readings[readings.len() - 200..];
    let mean = |rs: &[GpuReading], f: fn(&GpuReading) -> u64| {
        rs.iter().map(f).sum::<u64>() / rs.len() as u64
    };
    assert!(mean(high, |r| r.memory_used_mib) > mean(low, |r| r.memory_used_mib));
    assert!(mean(high, |r| r.power_milliwatts) > mean(low, |r| r.power_milliwatts));
    assert!(
        mean(high, |r| u64::from(r.temperature_celsius))
            > mean(low, |r| u64::from(r.temperature_celsius))
    );
    // power ≈ idle + util × (limit − idle), within the ±2 % noise.
    for r in &readings {
        let expected = 70_000.0 + f64::from(r.utilization_percent) / 100.0 * 630_000.0;
        let got = r.power_milliwatts as f64;
        assert!(
            (got - expected).abs() <= 0.02 * 700_000.0 + 3_500.0,
            "{r:?}"
        );
    }
}

#[test]
fn a_fail_rate_of_one_makes_every_gpu_unhealthy_and_zero_none() {
    let all = SimBackend::new(h100(), 8, 5, "n", 1.0).read_at(10.0);
    assert!(
        all.iter()
            .all(|g| g.ecc_uncorrected > 0 && !g.health().is_healthy())
    );
    let none = SimBackend::new(h100(), 8, 5, "n", 0.0).read_at(10.0);
    assert!(
        none.iter()
            .all(|g| g.ecc_uncorrected == 0 && g.health().is_healthy())
    );
}

#[test]
fn a_fail_rate_picks_roughly_that_share_of_gpus() {
    let faulty: usize = (0..200)
        .map(|n| {
            SimBackend::new(h100(), 8, 9, &format!("node-{n}"), 0.25)
                .read_at(0.0)
                .iter()
                .filter(|g| g.ecc_uncorrected > 0)
                .count()
        })
        .sum();
    // 1600 GPUs at 25 %: 400 expected; the bounds are ~6 standard deviations wide.
    assert!((300..500).contains(&faulty), "{faulty}");
}

#[test]
fn the_node_annotation_breaks_and_heals_chosen_gpus() {
    let mut node = SimBackend::new(h100(), 4, 5, "n", 0.0);
    let (faults, bad) = ForcedFaults::parse("1, 3,x");
    assert_eq!(bad, vec!["x".to_string()]);
    node.set_forced_faults(&faults);
    let healthy: Vec<bool> = node
        .read_at(0.0)
        .iter()
        .map(|g| g.health().is_healthy())
        .collect();
    assert_eq!(healthy, vec![true, false, true, false]);
    node.set_forced_faults(&ForcedFaults::parse("ALL").0);
    assert!(node.read_at(0.0).iter().all(|g| !g.health().is_healthy()));
    node.set_forced_faults(&ForcedFaults::None);
    assert!(node.read_at(0.0).iter().all(|g| g.health().is_healthy()));
    assert_eq!(ForcedFaults::parse(" ").0, ForcedFaults::None);
}

#[test]
fn the_sim_backend_reports_versions_and_its_kind() {
    let mut node = SimBackend::new(profile("T4-16GB").unwrap(), 2, 1, "n", 0.0);
    let reading = node.read_node().unwrap();
    assert_eq!(reading.gpus.len(), 2);
    assert_eq!(reading.driver_version.as_deref(), Some(SIM_DRIVER_VERSION));
    assert_eq!(reading.cuda_version.as_deref(), Some(SIM_CUDA_VERSION));
    assert_eq!(node.kind(), ProbeBackend::Sim);
    assert_eq!(reading.gpus[0].name, "Tesla T4");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn healthy_figures_stay_within_physical_bounds_for_every_profile(
        profile_index in 0..PROFILES.len(),
        seed in any::<u64>(),
        node in "[a-z0-9-]{1,20}",
        start in 0.0f64..2.0e9,
    ) {
        let p = &PROFILES[profile_index];
        let backend = SimBackend::new(p, 4, seed, &node, 0.0);
        for tick in 0..50 {
            let t = start + f64::from(tick) * 10.0;
            for g in backend.read_at(t) {
                prop_assert!(g.utilization_percent <= 100);
                prop_assert!(g.memory_used_mib > 0 && g.memory_used_mib < g.memory_total_mib);
                prop_assert_eq!(g.memory_total_mib, p.memory_mib);
                prop_assert!(g.power_milliwatts <= g.power_limit_milliwatts);
                prop_assert!(g.power_milliwatts >= u64::from(p.idle_power_watts) * 900);
                prop_assert!(g.temperature_celsius >= 26);
                prop_assert!(g.temperature_celsius < p.slowdown_celsius);
                prop_assert!(g.health().is_healthy(), "{:?}", g);
                prop_assert_eq!(&g.model, p.model);
            }
        }
    }
}

#[test]
fn a_forced_utilisation_holds_every_gpu_at_it_until_it_is_removed() {
    let mut sim = SimBackend::new(h100(), 4, 7, "kwok-node-idle", 0.0);
    let t = 1_750_000_000.0;
    let drawn = sim.read_at(t);
    sim.set_forced_utilization(Some(0));
    for later in [t, t + 600.0, t + 3600.0] {
        assert!(
            sim.read_at(later)
                .iter()
                .all(|r| r.utilization_percent == 0)
        );
    }
    sim.set_forced_utilization(Some(250));
    assert!(sim.read_at(t).iter().all(|r| r.utilization_percent == 100));
    sim.set_forced_utilization(None);
    assert_eq!(sim.read_at(t), drawn);
}
