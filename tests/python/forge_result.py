"""A malicious job: it reads its agent's credentials from /proc and reports
forged results in the agent's place, over AgentService, written only from
proto/toil/v1/*.proto.

Run as a job's command (with the generated modules on PYTHONPATH):

    python tests/python/forge_result.py OUTPUT_NAME

Each forgery names a stored file of the attempt's own prefix but exports it
somewhere it must not go, or names an output the job never declared. It
prints one JSON line: for each forgery, the gRPC status code the leader
answered with ("OK" if it was accepted). The end-to-end suite runs it in a
real workflow (tests/tests/attacks.rs).
"""

import json
import os
import sys

import grpc

from toil.v1 import agent_pb2, agent_pb2_grpc, common_pb2


def agent_environment() -> dict:
    """The environment of the nearest ancestor that holds an agent token."""
    pid = os.getppid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(
                    item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item
                )
        except OSError:
            env = {}
        if b"TOIL_AGENT_TOKEN" in env:
            return {k.decode(): v.decode() for k, v in env.items()}
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    raise SystemExit("no agent among this process's ancestors")


def main() -> None:
    output = sys.argv[1]
    agent = agent_environment()
    address = agent["TOIL_LEADER_ADDRESS"].split("://", 1)[-1]
    job_id = os.environ["TOIL_JOB_ID"]
    attempt_id = os.environ["TOIL_ATTEMPT_ID"]
    attempt = attempt_id.rsplit(".", 1)[1]
    prefix = f"files/{job_id}/{attempt}/"
    # The agent's address is the leader's Unix socket (`unix:PATH`); gRPC
    # would send the path as the HTTP/2 authority, which the leader refuses.
    stub = agent_pb2_grpc.AgentServiceStub(
        grpc.insecure_channel(address, options=[("grpc.default_authority", "localhost")])
    )

    def forge(name: str, path: str, file_id: str) -> str:
        result = agent_pb2.AttemptResult(
            cause=common_pb2.Cause(kind=common_pb2.CAUSE_KIND_SUCCEEDED),
            outputs=[
                common_pb2.OutputFiles(
                    name=name,
                    files=[common_pb2.FileRef(file_id=file_id, path=path, size_bytes=4)],
                )
            ],
        )
        req = agent_pb2.SynchronizeRequest(
            agent_id=agent["TOIL_AGENT_ID"],
            agent_token=agent["TOIL_AGENT_TOKEN"],
            phase=agent_pb2.AGENT_PHASE_DONE,
            attempt_id=attempt_id,
            attempt_token=os.environ["TOIL_ATTEMPT_TOKEN"],
            result=result,
        )
        try:
            stub.Synchronize(req, timeout=30)
            return "OK"
        except grpc.RpcError as err:
            return err.code().name

    print(
        json.dumps(
            {
                "dotdot": forge(output, "../../escaped.txt", prefix + "x"),
                "absolute": forge(output, "/tmp/toil-forged-absolute.txt", prefix + "x"),
                "undeclared": forge("not_declared", "x.txt", prefix + "x"),
                "foreign_file": forge(output, "x.txt", "inputs/0000"),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
