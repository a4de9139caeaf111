//! The leader's gRPC server: AgentService, WorkflowService, health checking
//! and reflection (so `grpcurl` works without the .proto files).

pub mod agent_svc;
pub mod workflow_svc;

use std::time::Duration;

use toil_proto::v1::agent_service_server::AgentServiceServer;
use toil_proto::v1::workflow_service_server::WorkflowServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use agent_svc::AgentSvc;
pub use workflow_svc::WorkflowSvc;

/// Serves until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    agents: AgentSvc,
    workflow: WorkflowSvc,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<AgentServiceServer<AgentSvc>>().await;
    health
        .set_serving::<WorkflowServiceServer<WorkflowSvc>>()
        .await;
    // Both reflection versions: grpcurl before 1.9 only speaks v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(toil_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    let router = builder
        .add_service(health_svc)
        .add_service(AgentServiceServer::new(agents))
        .add_service(WorkflowServiceServer::new(workflow));
    let router = match (reflection().build_v1(), reflection().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => router.add_service(v1).add_service(v1alpha),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "gRPC reflection unavailable");
            router
        }
    };
    // Small request/response messages on a fresh connection meet Nagle's
    // algorithm and delayed ACKs (40 ms stalls) unless accepted sockets
    // disable it; the builder's tcp_nodelay applies only to listeners tonic
    // binds itself.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, stop.cancelled())
        .await
}
