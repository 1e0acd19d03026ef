//! The database failing under Tether, without touching the shared server: a
//! TCP proxy in front of PostgreSQL that can cut it (every open connection
//! closed at once and new ones refused, accepted and closed at once, until it
//! heals), and another writer holding SQLite's write lock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct Shared {
    cut: AtomicBool,
    open: Mutex<Vec<AbortHandle>>,
    /// Connections closed or refused by cuts.
    dropped: AtomicUsize,
}

/// The proxy; it runs on a thread of its own until dropped.
pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `target`.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let shared = Arc::new(Shared::default());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let inner = shared.clone();
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
                    port_tx
                        .send(listener.local_addr().expect("proxy address").port())
                        .expect("report the port");
                    tokio::select! {
                        _ = stopped => {}
                        _ = serve(listener, target, inner.clone()) => {}
                    }
                    for task in inner.open.lock().unwrap().drain(..) {
                        task.abort();
                    }
                });
            })
            .expect("proxy thread");
        FaultProxy {
            port: port_rx.recv().expect("the proxy's port"),
            shared,
            stop: Some(stop),
        }
    }

    /// A proxy in front of the PostgreSQL server `url` names, and `url`
    /// rewritten to go through it.
    pub fn for_postgres(url: &str) -> (FaultProxy, String) {
        let mut parsed = url::Url::parse(url).expect("a database URL");
        let host = parsed.host_str().unwrap_or("127.0.0.1").to_string();
        let port = parsed.port().unwrap_or(5432);
        let target: SocketAddr = format!("{host}:{port}")
            .parse()
            .expect("the test database listens on an IP address");
        let proxy = FaultProxy::start(target);
        parsed.set_host(Some("127.0.0.1")).expect("host");
        parsed.set_port(Some(proxy.port)).expect("port");
        (proxy, parsed.to_string())
    }

    /// Closes every open connection and refuses new ones until [`heal`].
    ///
    /// [`heal`]: FaultProxy::heal
    pub fn cut(&self) {
        // Under the lock the accept loop takes: no connection slips through.
        let mut open = self.shared.open.lock().unwrap();
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.dropped.fetch_add(open.len(), Ordering::SeqCst);
        for task in open.drain(..) {
            task.abort();
        }
    }

    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Connections the cuts closed or refused so far.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let mut open = shared.open.lock().unwrap();
        if shared.cut.load(Ordering::SeqCst) {
            shared.dropped.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        let task = tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(target).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        open.retain(|t| !t.is_finished());
        open.push(task.abort_handle());
    }
}

/// A writer outside Tether holding SQLite's write lock until dropped (a long
/// import, a backup tool): readers go on, writers wait their busy timeout.
pub struct WriteLock(diesel::SqliteConnection);

impl WriteLock {
    /// Takes the write lock of the SQLite database at `url` (`sqlite://...`).
    pub fn take(url: &str) -> WriteLock {
        use diesel::connection::SimpleConnection;
        use diesel::Connection as _;
        let path = url.strip_prefix("sqlite://").expect("a SQLite URL");
        let mut c = diesel::SqliteConnection::establish(path).expect("open the database");
        c.batch_execute("BEGIN IMMEDIATE")
            .expect("take the write lock");
        WriteLock(c)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        use diesel::connection::SimpleConnection;
        let _ = self.0.batch_execute("ROLLBACK");
    }
}
