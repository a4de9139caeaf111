//! Kubeconfig files for an identity, as `kubectl` and kube-rs read them.

use base64::Engine;

use crate::emulator::config::Identity;

/// Renders a kubeconfig with the server URL, the CA, a bearer token and a
/// default namespace.
pub fn render(
    server: &str,
    ca_pem: &str,
    identity: &Identity,
    token: &str,
    namespace: &str,
) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let user = match identity {
        Identity::Admin => "admin".to_string(),
        Identity::User(u) => u.clone(),
        Identity::ServiceAccount { namespace, name } => format!("{namespace}-{name}"),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: toil-emulator
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: toil-emulator
  context:
    cluster: toil-emulator
    user: {user}
    namespace: {namespace}
current-context: toil-emulator
preferences: {{}}
"
    )
}

/// The default namespace of an identity's kubeconfig.
pub fn default_namespace(identity: &Identity) -> String {
    match identity {
        Identity::ServiceAccount { namespace, .. } => namespace.clone(),
        _ => "default".into(),
    }
}
