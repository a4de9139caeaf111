//! The leader's gRPC server: AgentService, WorkflowService, health checking
//! and reflection (so `grpcurl` works without the .proto files), over TLS
//! on TCP and plain on a private Unix socket ([`listen`]).

pub mod agent_svc;
pub mod listen;
pub mod tls;
pub mod workflow_svc;

use std::time::Duration;

use toil_proto::v1::agent_service_server::AgentServiceServer;
use toil_proto::v1::workflow_service_server::WorkflowServiceServer;
use tokio_util::sync::CancellationToken;

pub use agent_svc::AgentSvc;
pub use listen::Listeners;
pub use tls::LeaderCert;
pub use workflow_svc::WorkflowSvc;

/// Serves until `stop` fires.
pub async fn serve(
    listeners: Listeners,
    tls: std::sync::Arc<rustls::ServerConfig>,
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
    // Accepted TCP sockets get TCP_NODELAY in `listen` (the builder's
    // setting applies only to listeners tonic binds itself).
    let incoming = listen::incoming(listeners, tls, stop.clone());
    router
        .serve_with_incoming_shutdown(incoming, stop.cancelled())
        .await
}
