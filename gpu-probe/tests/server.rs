//! The HTTP endpoints, over a real socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use gpu_probe::server::serve;
use gpu_probe::{GpuBackend, ProbeState, SimBackend, sim};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let code = buf.split(' ').nth(1).unwrap().parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn endpoints_report_liveness_readiness_and_metrics() {
    let state = Arc::new(ProbeState::new().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));

    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    state.set_ready();
    assert_eq!(get(addr, "/readyz").await.0, 200);

    let mut node = SimBackend::new(sim::profile("L4-24GB").unwrap(), 2, 1, "kwok-7", 0.0);
    state
        .metrics
        .observe_node("kwok-7", &node.read_node().unwrap());
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    let util_lines: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{"))
        .collect();
    assert_eq!(util_lines.len(), 2, "{body}");
    assert!(
        util_lines
            .iter()
            .all(|l| l.contains("Hostname=\"kwok-7\"") && l.contains("modelName=\"NVIDIA L4\""))
    );
    assert_eq!(get(addr, "/nope").await.0, 404);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
