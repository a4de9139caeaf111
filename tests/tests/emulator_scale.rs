//! Many Jobs at once: every one completes, and the emulator's own API
//! traffic stays out of the counters (only client requests are counted).

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::{ListParams, PostParams};
use toil_tests::emulator::testkit::{job, job_condition, wait_list};
use toil_tests::emulator::{Emulator, EmulatorConfig, Identity, NodeConfig};

#[tokio::test]
async fn two_hundred_jobs_all_complete() {
    let n = 200;
    let cfg = EmulatorConfig::default()
        .with_nodes(vec![NodeConfig::new("a"), NodeConfig::new("b")])
        .with_image("toil-test:1", None);
    let emu = Emulator::start(cfg).unwrap_or_else(|e| panic!("{e}"));
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let jobs: Api<Job> = Api::namespaced(client, "default");
    emu.reset_request_counts();
    let started = Instant::now();
    for i in 0..n {
        let mut j = job(&format!("j{i}"), "toil-test:1", &["true"]);
        j.metadata.labels = Some([("batch".to_string(), "scale".to_string())].into());
        jobs.create(&PostParams::default(), &j)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let lp = ListParams::default().labels("batch=scale");
    let done = wait_list(&jobs, &lp, Duration::from_secs(120), |js| {
        js.len() == n && js.iter().all(|j| job_condition(j, "Complete").is_some())
    })
    .await
    .unwrap_or_else(|e| panic!("{}", &e[..e.len().min(2000)]));
    assert_eq!(done.len(), n);
    let counts = emu.request_counts();
    assert_eq!(counts.get("create", "jobs"), n as u64);
    eprintln!(
        "{n} jobs in {:?}; requests: {:?}",
        started.elapsed(),
        counts.by_verb
    );
    emu.shutdown();
}
