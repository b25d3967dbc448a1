//! A TCP proxy on 127.0.0.1 in front of an apiserver, which a test can cut and restore: a network
//! partition between one agent and the hub while the hub (and everyone else) keeps running. TLS
//! passes through untouched (the serving certificate is valid for 127.0.0.1).
//!
//! Cutting closes every open connection and refuses new ones until restored.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;

/// A running proxy; dropping it stops it.
pub struct TcpProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: JoinHandle<()>,
}

/// Copies `from` to `to` until either side closes.
async fn pump(from: OwnedReadHalf, to: OwnedWriteHalf) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        let mut sent = 0;
        while sent < n {
            if to.writable().await.is_err() {
                return;
            }
            match to.try_write(&buf[sent..n]) {
                Ok(m) => sent += m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
        }
    }
}

async fn serve(client: TcpStream, target: SocketAddr, mut cut: watch::Receiver<u64>) {
    let start = *cut.borrow_and_update();
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    tokio::select! {
        _ = pump(cr, uw) => {}
        _ = pump(ur, cw) => {}
        _ = async {
            while *cut.borrow_and_update() == start {
                if cut.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        } => {}
    }
}

impl TcpProxy {
    /// Starts a proxy to `target` (e.g. the hub's `https://127.0.0.1:PORT` host and port).
    pub async fn start(target: SocketAddr) -> Result<TcpProxy, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Other(format!("binding the proxy: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Other(format!("proxy address: {e}")))?;
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, rx) = watch::channel(0u64);
        let refusing = cut.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                tokio::spawn(serve(client, target, rx.clone()));
            }
        });
        Ok(TcpProxy {
            addr,
            cut,
            generation,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}
