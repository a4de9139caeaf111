//! The leader's gRPC surface and its front door: live logs over
//! FollowLogs, token checks on both services, and bad workflow files
//! refused before anything runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use toil_proto::v1::agent_service_client::AgentServiceClient;
use toil_proto::v1::{
    AgentPhase, FollowLogsRequest, GetJobRequest, GetWorkflowRequest, JobState, LogChunk,
    StreamLogsRequest, SynchronizeRequest,
};
use toil_tests::harness;
use toil_tests::local::{Sandbox, client};
use toil_tests::wait::{wait_for_async, when};

const T: Duration = Duration::from_secs(120);

/// A job that prints a line, waits for a gate file, then prints another.
fn gated(sb: &Sandbox) -> std::path::PathBuf {
    let gate = sb.path().join("gate");
    sb.write(
        "gated.yaml",
        &format!(
            r#"
defaults: {{cores: 0.1, memory: 32Mi}}
jobs:
  slow:
    command: |
      echo first line
      while [ ! -e {gate} ]; do sleep 0.05; done
      echo second line
"#,
            gate = gate.display()
        ),
    );
    gate
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_arrive_while_the_job_is_still_running() {
    let sb = Sandbox::new("livelogs");
    let gate = gated(&sb);
    let leader = sb.spawn(sb.leader(&["run", "gated.yaml"]), "leader");
    let info = tokio::task::block_in_place(|| sb.leader_info(T));
    // `address` is a bare target every gRPC library takes; `url` has the scheme.
    assert!(!info.address.contains("://"), "{}", info.address);
    assert_eq!(info.url, format!("https://{}", info.address));
    let mut c = client(&info, &info.client_token).await;
    let mut stream = c
        .follow_logs(FollowLogsRequest {
            job_id: "slow".into(),
            attempt: 0,
            offset: 0,
            follow: true,
        })
        .await
        .expect("follow")
        .into_inner();
    let mut seen = String::new();
    while !seen.contains("first line\n") {
        let piece = tokio::time::timeout(T, stream.message())
            .await
            .expect("log in time")
            .expect("stream")
            .expect("not ended yet");
        assert_eq!(piece.attempt_id, "slow.1");
        assert_eq!(piece.offset as usize, seen.len(), "pieces are contiguous");
        seen.push_str(&String::from_utf8_lossy(&piece.data));
    }
    // The job is still running: the line came live, not after the fact.
    let job = c
        .get_job(GetJobRequest {
            job_id: "slow".into(),
        })
        .await
        .expect("get job")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(job.state, JobState::Running as i32);
    // The terminal shows it too, written by another task: wait for it.
    tokio::task::block_in_place(|| {
        toil_tests::wait::wait_for("the line on the leader's terminal", T, || {
            let out = leader.stdout_now();
            when(out.contains("[slow] first line"), out)
        })
    });
    assert!(!seen.contains("second line"));
    std::fs::write(&gate, "").expect("gate");
    while let Some(piece) = tokio::time::timeout(T, stream.message())
        .await
        .expect("in time")
        .expect("stream")
    {
        seen.push_str(&String::from_utf8_lossy(&piece.data));
    }
    assert!(seen.ends_with("second line\n"), "{seen:?}");
    let r = tokio::task::spawn_blocking(move || leader.wait(T))
        .await
        .expect("join");
    r.expect_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_tokens_are_refused_on_both_services() {
    let sb = Sandbox::new("tokens");
    let gate = gated(&sb);
    let leader = sb.spawn(sb.leader(&["run", "gated.yaml"]), "leader");
    let info = tokio::task::block_in_place(|| sb.leader_info(T));
    // Wait until the job runs, so its agent and attempt exist.
    let c = client(&info, &info.client_token).await;
    wait_for_async("job slow to be running", T, || {
        let mut c = c.clone();
        async move {
            let j = c
                .get_job(GetJobRequest {
                    job_id: "slow".into(),
                })
                .await
                .expect("get job")
                .into_inner()
                .job
                .expect("job");
            when(j.state == JobState::Running as i32, j.state)
        }
    })
    .await;
    let mut agents = AgentServiceClient::new(info.channel().await);
    let sync =
        |agent_id: &str, token: &str, attempt: &str, attempt_token: &str| SynchronizeRequest {
            agent_id: agent_id.into(),
            agent_token: token.into(),
            phase: if attempt.is_empty() {
                AgentPhase::Idle as i32
            } else {
                AgentPhase::Running as i32
            },
            attempt_id: attempt.into(),
            attempt_token: attempt_token.into(),
            ..Default::default()
        };
    // The leader's first agent is agent-1-1: a guessed token is refused.
    for req in [
        sync("agent-1-1", "guess", "", ""),
        sync("agent-9-9", "guess", "", ""),
        sync("agent-1-1", "guess", "slow.1", "guess"),
    ] {
        let err = agents.synchronize(req).await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    }
    let chunk = StreamLogsRequest {
        attempt_id: "slow.1".into(),
        attempt_token: "guess".into(),
        chunk: Some(LogChunk {
            seq: 0,
            stream: 1,
            data: b"forged\n".to_vec(),
            time: None,
        }),
    };
    let mut resp = agents
        .stream_logs(tokio_stream::iter(vec![chunk]))
        .await
        .expect("stream opens")
        .into_inner();
    let err = resp.message().await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    // WorkflowService: no token, or a wrong one.
    let mut anon =
        toil_proto::v1::workflow_service_client::WorkflowServiceClient::new(info.channel().await);
    let err = anon
        .get_workflow(GetWorkflowRequest {})
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // It says where the token is: the file on the leader's machine.
    assert!(
        err.message().contains(&info.token_file) && err.message().contains("TOIL_CLIENT_TOKEN"),
        "{}",
        err.message()
    );
    let mut wrong = client(&info, "not-the-token").await;
    let err = wrong
        .get_workflow(GetWorkflowRequest {})
        .await
        .expect_err("wrong token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    std::fs::write(&gate, "").expect("gate");
    let r = tokio::task::spawn_blocking(move || leader.wait(T))
        .await
        .expect("join");
    r.expect_code(0);
    assert!(
        !r.stdout.contains("forged"),
        "a forged chunk got in:\n{}",
        r.stdout
    );
}

#[test]
fn bad_workflow_files_are_refused_with_positions_before_anything_runs() {
    let fixtures = harness::repo_root().join("leader/tests/fixtures/bad");
    for (file, needles) in [
        (
            "unknown-key.yaml",
            &["unknown-key.yaml:", "did you mean"][..],
        ),
        ("cycle.yaml", &["cycle.yaml:", "dependency cycle"][..]),
        ("missing-job.yaml", &["missing-job.yaml:"][..]),
        ("missing-input.yaml", &["missing-input.yaml:"][..]),
        ("bad-size.yaml", &["bad-size.yaml:"][..]),
        ("syntax-error.yaml", &["syntax-error.yaml:"][..]),
    ] {
        let sb = Sandbox::new("bad");
        let wf = fixtures.join(file);
        let r = sb.run(&["run", &wf.to_string_lossy()], T);
        r.expect_code(2);
        for n in needles {
            assert!(
                r.stderr.contains(n),
                "{file}: {n:?} missing in\n{}",
                r.stderr
            );
        }
        // file:line:col
        let pos = r
            .stderr
            .split(file)
            .nth(1)
            .unwrap_or_default()
            .trim_start_matches(':')
            .split(':')
            .take(2)
            .all(|n| n.trim().parse::<u32>().is_ok());
        assert!(pos, "{file}: no line:col in\n{}", r.stderr);
        assert!(!sb.job_store().exists(), "{file}: nothing may be created");
    }
    // A job larger than this machine (as limited by --maxMemory).
    let sb = Sandbox::new("toolarge");
    sb.write(
        "big.yaml",
        "jobs:\n  big:\n    command: 'true'\n    memory: 3Gi\n",
    );
    let r = sb.run(&["run", "big.yaml", "--maxMemory", "1Gi"], T);
    r.expect_code(2);
    assert!(r.stderr.contains("big.yaml:4:"), "{}", r.stderr);
    assert!(r.stderr.contains("--maxMemory"), "{}", r.stderr);
    // Bad flags say what to write.
    let r = sb.run(&["run", "big.yaml", "--maxMemory", "lots"], T);
    r.expect_code(2);
    assert!(r.stderr.contains("--maxMemory \"lots\""), "{}", r.stderr);
    let r = sb.run(&["run", "big.yaml", "--jobStore", "aws:us-west-2"], T);
    r.expect_code(2);
    assert!(r.stderr.contains("aws:REGION:NAME"), "{}", r.stderr);
    // A restart of something that never ran.
    let r = sb.run(&["run", "big.yaml", "--restart"], T);
    r.expect_code(2);
    assert!(r.stderr.contains("no job store"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_reflection_are_served_so_generic_tools_work() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let sb = Sandbox::new("reflect");
    let gate = gated(&sb);
    let leader = sb.spawn(sb.leader(&["run", "gated.yaml"]), "leader");
    let info = tokio::task::block_in_place(|| sb.leader_info(T));

    let channel = info.channel().await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["toil.v1.AgentService", "toil.v1.WorkflowService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service}");
    }

    let mut reflect = ServerReflectionClient::new(channel);
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let mut answers = reflect
        .server_reflection_info(tokio_stream::iter(vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "toil.v1.WorkflowService".into(),
            )),
        ]))
        .await
        .expect("reflection")
        .into_inner();
    let first = answers.message().await.expect("answer").expect("some");
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("expected a service list, got {first:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in [
        "toil.v1.AgentService",
        "toil.v1.WorkflowService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == s), "{s} not listed: {names:?}");
    }
    let second = answers.message().await.expect("answer").expect("some");
    let Some(MessageResponse::FileDescriptorResponse(files)) = second.message_response else {
        panic!("expected descriptors, got {second:?}");
    };
    let fds: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost::Message::decode(&b[..]).expect("descriptor"))
        .collect();
    assert!(
        fds.iter().any(|f| f.name() == "toil/v1/workflow.proto"
            && f.service.iter().any(|s| s.name() == "WorkflowService")),
        "{:?}",
        fds.iter().map(|f| f.name()).collect::<Vec<_>>()
    );

    std::fs::write(&gate, "").expect("gate");
    let r = tokio::task::spawn_blocking(move || leader.wait(T))
        .await
        .expect("join");
    r.expect_code(0);
}
