"""A malicious job that goes after the leader's log handling, written only
from proto/toil/v1/*.proto.

Run as a job's command (with the generated modules on PYTHONPATH):

    python tests/python/log_attack.py ahead
        Streams chunks of its own attempt's log numbered far past the next
        one expected (a million ahead, 300 MiB of them), then chunks within
        the window but far more than the leader holds out of order.
    python tests/python/log_attack.py spy OTHER_JOB
        With its own token (TOIL_ATTEMPT_TOKEN), reads the log of OTHER_JOB,
        then its own, then OTHER_JOB's record.

Prints one JSON line: the gRPC status code of each attempt ("OK" if the
leader went along) and what it learnt. The end-to-end suite runs it in real
workflows (tests/tests/attacks.rs).
"""

import json
import os
import sys
import time

import grpc

from toil.v1 import agent_pb2, agent_pb2_grpc, common_pb2, workflow_pb2, workflow_pb2_grpc

MIB = 1 << 20


def channel() -> grpc.Channel:
    target = os.environ["TOIL_LEADER_ADDRESS"].split("://", 1)[-1]
    # A local job dials the leader's Unix socket (`unix:PATH`); gRPC would
    # send the path as the authority, which the server refuses: say
    # `localhost`.
    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.max_send_message_length", 8 * MIB),
            ("grpc.default_authority", "localhost"),
        ],
    )


def stream(stub, seqs, size: int) -> str:
    """Sends one chunk of `size` bytes per number in `seqs` on one stream;
    returns the status the stream ended with."""
    attempt_id = os.environ["TOIL_ATTEMPT_ID"]
    token = os.environ["TOIL_ATTEMPT_TOKEN"]
    data = b"A" * size

    def requests():
        for seq in seqs:
            yield agent_pb2.StreamLogsRequest(
                attempt_id=attempt_id,
                attempt_token=token,
                chunk=agent_pb2.LogChunk(seq=seq, stream=common_pb2.LOG_STREAM_STDOUT, data=data),
            )

    try:
        for _ in stub.StreamLogs(requests(), timeout=60):
            pass
        return "OK"
    except grpc.RpcError as err:
        return f"{err.code().name}: {err.details()}"


def ahead() -> dict:
    stub = agent_pb2_grpc.AgentServiceStub(channel())
    far = stream(stub, range(1_000_000, 1_000_300), MIB)
    # Within the window (the agent has sent only a few chunks so far) but
    # 40 MiB held out of order, waiting for chunk 99.
    held = stream(stub, range(100, 140), MIB)
    return {"far": far, "held": held}


def spy(other: str) -> dict:
    stub = workflow_pb2_grpc.WorkflowServiceStub(channel())
    auth = [("authorization", "Bearer " + os.environ["TOIL_ATTEMPT_TOKEN"])]

    def read(job: str) -> tuple[str, str]:
        try:
            parts = stub.FollowLogs(
                workflow_pb2.FollowLogsRequest(job_id=job, follow=False), metadata=auth, timeout=30
            )
            return "OK", b"".join(p.data for p in parts).decode(errors="replace")
        except grpc.RpcError as err:
            return f"{err.code().name}: {err.details()}", ""

    other_code, other_log = read(other)
    # Its own line reaches the leader within moments of being printed.
    deadline = time.monotonic() + 20
    while True:
        own_code, own_log = read(os.environ["TOIL_JOB_ID"])
        if "spying now" in own_log or own_code != "OK" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    try:
        job = stub.GetJob(workflow_pb2.GetJobRequest(job_id=other), metadata=auth, timeout=30).job
        record = {"state": common_pb2.JobState.Name(job.state), "outputs": len(job.outputs)}
    except grpc.RpcError as err:
        record = {"error": err.code().name}
    return {
        "other": other_code,
        "other_log": other_log,
        "own": own_code,
        "own_log": own_log,
        "other_record": record,
    }


def main() -> None:
    if sys.argv[1] == "ahead":
        verdict = ahead()
    else:
        print("spying now", flush=True)
        verdict = spy(sys.argv[2])
    print(json.dumps(verdict), file=sys.stderr, flush=True)
    with open(os.environ["VERDICT"], "w") as f:
        json.dump(verdict, f)


main()
