//! A TCP proxy in front of a real `redis-server` that delays its replies: every reply
//! by a set latency, and one chosen reply by longer. Commands pass at once, so a
//! delayed reply is a command Redis has already run, as with a slow network or a
//! stalled client. Each client connection gets its own upstream connection; when either
//! side closes, both do, so a killed Redis looks killed to the client too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub struct DelayingProxy {
    pub port: u16,
    control: Arc<Control>,
}

#[derive(Default)]
struct Control {
    delay_ms: AtomicU64,
    /// The next reply read from Redis is delivered this long after it came, once.
    hold_next_ms: AtomicU64,
}

impl Control {
    fn delay_for_next_reply(&self) -> Duration {
        let held = self.hold_next_ms.swap(0, Ordering::SeqCst);
        let ms = if held > 0 { held } else { self.delay_ms.load(Ordering::SeqCst) };
        Duration::from_millis(ms)
    }
}

impl DelayingProxy {
    /// Listens on a free port and forwards to `upstream_port`, on the current runtime.
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let control = Arc::new(Control::default());
        let shared = control.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream_port, shared.clone()));
            }
        });
        Self { port, control }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Every reply from now on arrives this long after Redis sent it.
    pub fn delay_replies(&self, delay: Duration) {
        self.control.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The next reply arrives `hold` after Redis sent it; later ones queue behind it.
    pub fn hold_next_reply(&self, hold: Duration) {
        self.control.hold_next_ms.store(hold.as_millis() as u64, Ordering::SeqCst);
    }
}

async fn relay(client: TcpStream, upstream_port: u16, control: Arc<Control>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let commands = async { tokio::io::copy(&mut client_read, &mut server_write).await.map(drop) };
    let (replies_tx, mut replies_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read_replies = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = server_read.read(&mut buffer).await?;
            if read == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let due = Instant::now() + control.delay_for_next_reply();
            if replies_tx.send((due, buffer[..read].to_vec())).is_err() {
                return Ok(());
            }
        }
    };
    let deliver_replies = async {
        while let Some((due, reply)) = replies_rx.recv().await {
            tokio::time::sleep_until(due).await;
            client_write.write_all(&reply).await?;
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        _ = commands => {}
        _ = read_replies => {}
        _ = deliver_replies => {}
    }
}
