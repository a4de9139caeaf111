"""A WorkflowService client written only from proto/toil/v1/*.proto.

Generate the Python modules first:

    python -m grpc_tools.protoc -I proto --python_out=GEN --grpc_python_out=GEN \
        proto/toil/v1/*.proto

then run:

    PYTHONPATH=GEN python tests/python/workflow_client.py JOB_STORE_DIR [unix|tls [JOB_NAME]]

It reads where the leader is from state/leader.json in a file job store:
its Unix socket (`socket`, on the leader's machine) or its TLS address
(`address`) with the certificate to trust (`cert_pem`). The client token is
not in the job store: it is in the file `token_file` names (readable by the
leader's user alone), or in TOIL_CLIENT_TOKEN. It adds a job, watches events
until that job ends, follows its log, and prints one JSON line with what it
saw. The end-to-end suite runs it against a real leader
(tests/tests/local_clients.rs).
"""

import json
import os
import sys

import grpc

from toil.v1 import common_pb2, workflow_pb2, workflow_pb2_grpc


def main() -> None:
    store = sys.argv[1]
    mode = sys.argv[2] if len(sys.argv) > 2 else "unix"
    name = sys.argv[3] if len(sys.argv) > 3 else "from_python"
    with open(os.path.join(store, "state", "leader.json")) as f:
        info = json.load(f)
    token = os.environ.get("TOIL_CLIENT_TOKEN")
    if not token:
        with open(info["token_file"]) as f:
            token = f.read().strip()
    auth = [("authorization", "Bearer " + token)]
    if mode == "tls":
        # `address` is a plain HOST:PORT target; the leader's certificate is
        # the only root trusted, and it names the address's host.
        creds = grpc.ssl_channel_credentials(root_certificates=info["cert_pem"].encode())
        channel = grpc.secure_channel(info["address"], creds)
    else:
        # `unix:PATH`, a target gRPC takes as it is. gRPC would send the
        # socket's path as the HTTP/2 authority, which the leader's HTTP/2
        # server refuses as malformed (PROTOCOL_ERROR): send `localhost`.
        channel = grpc.insecure_channel(
            info["socket"], options=[("grpc.default_authority", "localhost")]
        )
    stub = workflow_pb2_grpc.WorkflowServiceStub(channel)

    wf = stub.GetWorkflow(workflow_pb2.GetWorkflowRequest(), metadata=auth)

    added = stub.AddJobs(
        workflow_pb2.AddJobsRequest(
            relation=workflow_pb2.RELATION_ROOT,
            jobs=[
                workflow_pb2.JobSpec(
                    name=name,
                    shell="echo hello from python; echo second line >&2",
                    resources=common_pb2.Resources(
                        millicores=100, memory_bytes=32 << 20, disk_bytes=1 << 20
                    ),
                )
            ],
        ),
        metadata=auth,
    )

    # Events from the start, until the job reaches a final state. The
    # attempt's end (with its cause) is documented to arrive before the state
    # change it leads to, so stopping at the final state loses nothing.
    final = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_BLOCKED"}
    states = []
    ended = None
    placement = None
    for item in stub.WatchEvents(workflow_pb2.WatchEventsRequest(after_seq=0), metadata=auth):
        e = item.event
        kind = e.WhichOneof("kind")
        if kind == "attempt_started" and e.attempt_started.job_id == name:
            placement = e.attempt_started.placement
        if kind == "attempt_ended" and e.attempt_ended.job_id == name:
            ended = common_pb2.CauseKind.Name(e.attempt_ended.cause.kind)
        if kind == "job_state_changed" and e.job_state_changed.job_id == name:
            state = common_pb2.JobState.Name(e.job_state_changed.to)
            states.append(state)
            if state in final:
                break

    log = b"".join(
        piece.data
        for piece in stub.FollowLogs(
            workflow_pb2.FollowLogsRequest(job_id=name, follow=True), metadata=auth
        )
    )
    job = stub.GetJob(workflow_pb2.GetJobRequest(job_id=name), metadata=auth).job

    denied = None
    try:
        stub.GetWorkflow(
            workflow_pb2.GetWorkflowRequest(), metadata=[("authorization", "Bearer nope")]
        )
    except grpc.RpcError as err:
        denied = err.code().name

    print(
        json.dumps(
            {
                "workflow": wf.name,
                "epoch": wf.epoch,
                "added": list(added.job_ids),
                "states": states,
                "ended": ended,
                "placement": placement,
                "log": log.decode(),
                "job_state": common_pb2.JobState.Name(job.state),
                "attempts": len(job.attempts),
                "denied": denied,
            }
        )
    )


if __name__ == "__main__":
    main()
