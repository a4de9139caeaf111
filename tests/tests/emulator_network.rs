//! The emulator's isolated pod network and Services: pods live in one
//! network namespace of their own (the host's 127.0.0.1 is unreachable
//! from them, as a leader behind NAT is), reach the API server in-cluster,
//! reach each other by pod IP, and reach Services by clusterIP through the
//! emulator's kube-proxy.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, LogParams, PostParams};
use serde_json::json;
use toil_tests::emulator::testkit::{phase, wait_for, wait_gone};
use toil_tests::emulator::{Emulator, EmulatorConfig, Identity, PodNetworkMode};
use toil_tests::wait::wait_for_async;

const IMAGE: &str = "toil-test:1";
const T: Duration = Duration::from_secs(30);

fn start_isolated() -> Emulator {
    let cfg = EmulatorConfig::default()
        .with_image(IMAGE, None)
        .with_pod_network(PodNetworkMode::Isolated);
    Emulator::start(cfg).unwrap_or_else(|e| panic!("emulator: {e}"))
}

async fn admin_pods(emu: &Emulator) -> (kube::Client, Api<Pod>) {
    let client = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pods = Api::namespaced(client.clone(), "default");
    (client, pods)
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
}

fn pod_ip(p: &Pod) -> Option<Ipv4Addr> {
    p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// Runs a python3 script in a pod to completion and returns its logs.
async fn run_script(pods: &Api<Pod>, name: &str, script: &str, env: serde_json::Value) -> String {
    let p: Pod = from_json(json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": IMAGE, "command": ["python3", "-c", script], "env": env,
        }]},
    }));
    pods.create(&PostParams::default(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let done = wait_for(pods, name, T, |p| {
        matches!(phase(p).as_str(), "Succeeded" | "Failed")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let logs = pods
        .logs(name, &LogParams::default())
        .await
        .unwrap_or_default();
    assert_eq!(phase(&done), "Succeeded", "{name}: {logs}");
    logs
}

/// A pod serving `GET /` with its own name on POD_IP:PORT, labelled `app`.
fn web_pod(name: &str, app: &str, port: u16) -> Pod {
    let script = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["POD_NAME"].encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer((os.environ["POD_IP"], int(os.environ["PORT"])), H).serve_forever()
"#;
    from_json(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": IMAGE, "command": ["python3", "-c", script],
            "ports": [{"name": "http", "containerPort": port}],
            "env": [
                {"name": "PORT", "value": port.to_string()},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            ],
        }]},
    }))
}

/// `GET /` over a socket made inside the pod network; the body, or the
/// error (a refused connection is `Err(ConnectionRefused)`).
fn http_get(emu: &Emulator, addr: SocketAddr) -> std::io::Result<String> {
    let mut s = emu.pod_network().connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out))
}

async fn wait_running(pods: &Api<Pod>, name: &str) -> Ipv4Addr {
    let p = wait_for(pods, name, T, |p| {
        phase(p) == "Running" && pod_ip(p).is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    pod_ip(&p).unwrap_or_else(|| panic!("{p:?}"))
}

/// `GET /` through the pod network until it answers `want`.
async fn wait_answer(emu: &Emulator, addr: SocketAddr, want: &str) {
    wait_for_async(&format!("{addr} to answer {want}"), T, || async {
        match http_get(emu, addr) {
            Ok(body) if body == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// Until connections to `addr` inside the pod network are refused.
async fn wait_refused(emu: &Emulator, addr: SocketAddr) {
    wait_for_async(&format!("{addr} to refuse connections"), T, || async {
        match emu.pod_network().connect(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn isolated_pods_cannot_reach_the_host_but_reach_the_api_server() {
    let emu = start_isolated();
    let (_, pods) = admin_pods(&emu).await;
    // A "leader" on the host's loopback: pods must not reach it.
    let leader = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    leader
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let port = leader.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let refused = emu
        .pod_network()
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .err()
        .map(|e| e.kind());
    assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused));

    let script = r#"
import json, os, socket, ssl, urllib.request
try:
    socket.create_connection(("127.0.0.1", int(os.environ["LEADER_PORT"])), timeout=5)
    print("leader reachable")
except ConnectionRefusedError:
    print("leader refused")
d = "/var/run/secrets/kubernetes.io/serviceaccount"
tok = open(d + "/token").read()
ctx = ssl.create_default_context(cafile=d + "/ca.crt")
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
url = "https://%s:%s/api/v1/namespaces/default/pods/%s" % (host, port, os.environ["POD_NAME"])
req = urllib.request.Request(url, headers={"Authorization": "Bearer " + tok})
try:
    urllib.request.urlopen(req, context=ctx)
except urllib.error.HTTPError as e:
    print(e.code, json.load(e)["reason"])
print(host, port, os.environ["POD_IP"])
"#;
    let env = json!([
        {"name": "LEADER_PORT", "value": port.to_string()},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]);
    let logs = run_script(&pods, "probe", script, env).await;
    let p = pods.get("probe").await.unwrap_or_else(|e| panic!("{e}"));
    let ip = pod_ip(&p).unwrap_or_else(|| panic!("{p:?}"));
    assert_eq!(ip.octets()[..2], [127, 10], "{ip}");
    // The API server answered over TLS (certificate checked against the
    // mounted CA) with its RBAC verdict for the default service account.
    assert_eq!(
        logs,
        format!("leader refused\n403 Forbidden\n127.96.0.1 443 {ip}\n")
    );
    // Nothing ever arrived at the host's listener.
    assert_eq!(
        leader.accept().err().map(|e| e.kind()),
        Some(std::io::ErrorKind::WouldBlock)
    );

    // A hostNetwork pod lives in the host's network, with the node's IP.
    let script = r#"
import os, socket
socket.create_connection(("127.0.0.1", int(os.environ["LEADER_PORT"])), timeout=5).close()
print("leader reachable from", os.environ["POD_IP"])
"#;
    let env = json!([
        {"name": "LEADER_PORT", "value": port.to_string()},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]);
    let p: Pod = from_json(json!({
        "metadata": {"name": "on-host"},
        "spec": {"hostNetwork": true, "restartPolicy": "Never", "containers": [{
            "name": "main", "image": IMAGE, "command": ["python3", "-c", script], "env": env,
        }]},
    }));
    pods.create(&PostParams::default(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let done = wait_for(&pods, "on-host", T, |p| {
        matches!(phase(p).as_str(), "Succeeded" | "Failed")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let logs = pods
        .logs("on-host", &LogParams::default())
        .await
        .unwrap_or_default();
    assert_eq!(
        (phase(&done).as_str(), logs.as_str()),
        ("Succeeded", "leader reachable from 127.0.0.1\n")
    );
    assert!(leader.accept().is_ok());
    emu.shutdown();
}

#[tokio::test]
async fn pods_reach_each_other_by_pod_ip_and_services_by_cluster_ip() {
    let emu = start_isolated();
    let (client, pods) = admin_pods(&emu).await;
    let services: Api<Service> = Api::namespaced(client, "default");
    pods.create(&PostParams::default(), &web_pod("web-1", "web", 8080))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ip1 = wait_running(&pods, "web-1").await;
    assert_eq!(ip1.octets()[..2], [127, 10], "{ip1}");
    let web1 = SocketAddr::new(IpAddr::V4(ip1), 8080);
    wait_answer(&emu, web1, "web-1").await;
    // The pod's listener is inside the pod network, not on the host.
    assert!(std::net::TcpStream::connect(web1).is_err());

    // Another pod reaches it by pod IP, and the Service by clusterIP.
    let svc: Service = from_json(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }));
    let svc = services
        .create(&PostParams::default(), &svc)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cluster_ip: Ipv4Addr = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{svc:?}"));
    assert_eq!(cluster_ip.octets()[..2], [127, 96], "{cluster_ip}");
    let front = SocketAddr::new(IpAddr::V4(cluster_ip), 80);
    wait_answer(&emu, front, "web-1").await;
    let script = r#"
import os, urllib.request
# The Service's address as the kubelet's service links give it.
svc = "http://%s:%s/" % (os.environ["WEB_SERVICE_HOST"], os.environ["WEB_SERVICE_PORT"])
for url in ("http://%s:8080/" % os.environ["WEB_IP"], svc):
    print(urllib.request.urlopen(url, timeout=10).read().decode())
"#;
    let env = json!([
        {"name": "WEB_IP", "value": ip1.to_string()},
    ]);
    assert_eq!(
        run_script(&pods, "client", script, env).await,
        "web-1\nweb-1\n"
    );

    // kubectl shows it as on a real cluster.
    let kubeconfig = emu
        .kubeconfig_for(&Identity::Admin)
        .unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "services", "-o", "wide"])
        .output()
        .unwrap_or_else(|e| panic!("kubectl (install kubectl v1.32 to run this test): {e}"));
    let table = String::from_utf8_lossy(&out.stdout);
    let web_row = table
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_else(|| panic!("{table}{}", String::from_utf8_lossy(&out.stderr)));
    let cells: Vec<&str> = web_row.split_whitespace().collect();
    let ip_text = cluster_ip.to_string();
    assert_eq!(
        (cells[1], cells[2], cells[3], cells[4], cells[6]),
        ("ClusterIP", ip_text.as_str(), "<none>", "80/TCP", "app=web"),
        "{table}"
    );
    assert!(table.contains("kubernetes "), "{table}");

    // A taken clusterIP is refused; the clusterIP cannot change.
    let clash: Service = from_json(json!({
        "metadata": {"name": "clash"},
        "spec": {"clusterIP": cluster_ip.to_string(), "ports": [{"port": 81}]},
    }));
    let err = services
        .create(&PostParams::default(), &clash)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("provided IP is already allocated"), "{err}");
    let mut moved = services.get("web").await.unwrap_or_else(|e| panic!("{e}"));
    if let Some(s) = moved.spec.as_mut() {
        s.cluster_ip = Some("127.96.200.200".into());
        s.cluster_ips = Some(vec!["127.96.200.200".into()]);
    }
    let err = services
        .replace("web", &PostParams::default(), &moved)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("field is immutable"), "{err}");

    // The backing pod goes: connections are refused. A new one comes: the
    // same clusterIP reaches it.
    pods.delete("web-1", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_gone(&pods, "web-1", T)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_refused(&emu, front).await;
    pods.create(&PostParams::default(), &web_pod("web-2", "web", 8080))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ip2 = wait_running(&pods, "web-2").await;
    assert_ne!(ip2, ip1);
    wait_answer(&emu, front, "web-2").await;
    let svc = services.get("web").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        svc.spec.and_then(|s| s.cluster_ip),
        Some(cluster_ip.to_string())
    );

    // Deleting the Service closes its listener; the pod still answers.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_refused(&emu, front).await;
    assert_eq!(
        http_get(&emu, SocketAddr::new(IpAddr::V4(ip2), 8080)).ok(),
        Some("web-2".to_string())
    );
    emu.shutdown();
}

#[tokio::test]
async fn services_work_on_the_host_network_too() {
    let emu = Emulator::start(EmulatorConfig::default().with_image(IMAGE, None))
        .unwrap_or_else(|e| panic!("emulator: {e}"));
    let (client, pods) = admin_pods(&emu).await;
    let services: Api<Service> = Api::namespaced(client, "default");
    // Pods share the host's network here: a free port of this machine.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    pods.create(&PostParams::default(), &web_pod("web-1", "web", port))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wait_running(&pods, "web-1").await, Ipv4Addr::LOCALHOST);
    let svc: Service = from_json(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": port}]},
    }));
    let svc = services
        .create(&PostParams::default(), &svc)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cluster_ip: Ipv4Addr = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no clusterIP"));
    let front = SocketAddr::new(IpAddr::V4(cluster_ip), 80);
    wait_answer(&emu, front, "web-1").await;
    // The pods' API address is unchanged: the host's HTTPS port.
    assert!(emu.pod_network().in_cluster_api().is_none());
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_refused(&emu, front).await;
    emu.shutdown();
}
