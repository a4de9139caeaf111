"""A WorkflowService client written only from proto/toil/v1/*.proto.

Generate the Python modules first:

    python -m grpc_tools.protoc -I proto --python_out=GEN --grpc_python_out=GEN \
        proto/toil/v1/*.proto

then run:

    PYTHONPATH=GEN python tests/python/workflow_client.py JOB_STORE_DIR

It reads the leader's address and client token from state/leader.json in a
file job store, adds a job, watches events until that job ends, follows its
log, and prints one JSON line with what it saw. The end-to-end suite runs it
against a real leader (tests/tests/local_clients.rs).
"""

import json
import os
import sys

import grpc

from toil.v1 import common_pb2, workflow_pb2, workflow_pb2_grpc


def main() -> None:
    store = sys.argv[1]
    with open(os.path.join(store, "state", "leader.json")) as f:
        info = json.load(f)
    # `address` is a plain HOST:PORT target, as grpc.insecure_channel wants.
    target = info["address"]
    auth = [("authorization", "Bearer " + info["client_token"])]
    stub = workflow_pb2_grpc.WorkflowServiceStub(grpc.insecure_channel(target))

    wf = stub.GetWorkflow(workflow_pb2.GetWorkflowRequest(), metadata=auth)

    added = stub.AddJobs(
        workflow_pb2.AddJobsRequest(
            relation=workflow_pb2.RELATION_ROOT,
            jobs=[
                workflow_pb2.JobSpec(
                    name="from_python",
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
        if kind == "attempt_started" and e.attempt_started.job_id == "from_python":
            placement = e.attempt_started.placement
        if kind == "attempt_ended" and e.attempt_ended.job_id == "from_python":
            ended = common_pb2.CauseKind.Name(e.attempt_ended.cause.kind)
        if kind == "job_state_changed" and e.job_state_changed.job_id == "from_python":
            state = common_pb2.JobState.Name(e.job_state_changed.to)
            states.append(state)
            if state in final:
                break

    log = b"".join(
        piece.data
        for piece in stub.FollowLogs(
            workflow_pb2.FollowLogsRequest(job_id="from_python", follow=True), metadata=auth
        )
    )
    job = stub.GetJob(workflow_pb2.GetJobRequest(job_id="from_python"), metadata=auth).job

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
