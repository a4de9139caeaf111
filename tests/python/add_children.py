"""Run inside a job: adds a child and a follow-on to the running job.

A job learns where the leader is and how to authenticate from its
environment (TOIL_LEADER_ADDRESS, TOIL_ATTEMPT_TOKEN): the address is the
leader's Unix socket (`unix:PATH`) for a local job, or `https://HOST:PORT` in
a pod, whose certificate is in TOIL_LEADER_CERT. Children run after this
job succeeds; the follow-on runs after the children; and any job that
depends on this one waits for all of them.
"""

import os
import sys

import grpc

from toil.v1 import common_pb2, workflow_pb2, workflow_pb2_grpc

log = sys.argv[1]
address = os.environ["TOIL_LEADER_ADDRESS"]
if address.startswith("https://"):
    creds = grpc.ssl_channel_credentials(root_certificates=os.environ["TOIL_LEADER_CERT"].encode())
    # The certificate always names toil-leader; a pod dials an IP it may not.
    channel = grpc.secure_channel(
        address.removeprefix("https://"),
        creds,
        options=[("grpc.ssl_target_name_override", "toil-leader")],
    )
else:
    # A Unix socket: the default authority would be the socket's path,
    # which the leader's HTTP/2 server refuses as malformed.
    channel = grpc.insecure_channel(address, options=[("grpc.default_authority", "localhost")])
auth = [("authorization", "Bearer " + os.environ["TOIL_ATTEMPT_TOKEN"])]
stub = workflow_pb2_grpc.WorkflowServiceStub(channel)
small = common_pb2.Resources(millicores=100, memory_bytes=32 << 20, disk_bytes=1 << 20)

kids = stub.AddJobs(
    workflow_pb2.AddJobsRequest(
        relation=workflow_pb2.RELATION_CHILD,
        jobs=[
            workflow_pb2.JobSpec(
                name=f"kid{i}",
                shell=f"sleep 0.2; echo kid{i} >> {log}; echo I am kid {i}",
                resources=small,
            )
            for i in range(2)
        ],
    ),
    metadata=auth,
)
follow = stub.AddJobs(
    workflow_pb2.AddJobsRequest(
        relation=workflow_pb2.RELATION_FOLLOW_ON,
        jobs=[workflow_pb2.JobSpec(name="wrapup", shell=f"echo wrapup >> {log}", resources=small)],
    ),
    metadata=auth,
)
# A job may not add top-level jobs with its own token.
try:
    stub.AddJobs(
        workflow_pb2.AddJobsRequest(
            relation=workflow_pb2.RELATION_ROOT,
            jobs=[workflow_pb2.JobSpec(name="rogue", shell="true")],
        ),
        metadata=auth,
    )
    print("rogue allowed")
except grpc.RpcError as err:
    print("root refused:", err.code().name)
print("added", " ".join(list(kids.job_ids) + list(follow.job_ids)))
with open(log, "a") as f:
    f.write("parent\n")
