//! Exactly-once writes across reconnects (extension `idempotency`): a write
//! whose RESULT is lost with the connection is resent after the reconnect
//! with the same idempotency key, applied once, and its caller gets the
//! RESULT; writes made while disconnected wait and go out after it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sodp_client::{Client, Error, WriteOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{client, eventually, json, Proxy, TestServer};

/// A TCP proxy that, once armed, cuts the connection instead of forwarding
/// the next server→client chunk holding a RESULT (`call_id` appears in it
/// unmasked; client→server WebSocket frames are masked, so the cue is taken
/// on the way back). So the server has applied the write, and its RESULT
/// never reaches the client.
struct ResultCutter {
    port: u16,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
}

impl ResultCutter {
    async fn start(target_port: u16) -> ResultCutter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (a, n) = (armed.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                    continue;
                };
                tokio::spawn(pump(inbound, outbound, a.clone(), n.clone()));
            }
        });
        ResultCutter { port, armed, cuts }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
}

async fn pump(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            let holds_result = chunk.windows(7).any(|w| w == b"call_id");
            if holds_result && armed.swap(false, Ordering::SeqCst) {
                cuts.fetch_add(1, Ordering::SeqCst);
                return; // dropped unsent; both sockets close below
            }
            if client_tx.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

fn reconnecting(url: &str) -> Client {
    Client::builder(url)
        .reconnect_delay(Duration::from_millis(50))
        .max_reconnect_delay(Duration::from_millis(200))
        .call_timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_result_was_lost_is_applied_once_and_answered() {
    let server = TestServer::start();
    let cutter = ResultCutter::start(server.port).await;
    let c = reconnecting(&cutter.url());
    c.ready().await.unwrap();
    let direct = client(&server.url()).await;

    // Appending is not idempotent by itself: a second application would
    // show as a second element.
    cutter.arm();
    let version = c.set_in("once.log", "/-", &"entry").await.unwrap();
    assert_eq!(cutter.cuts.load(Ordering::SeqCst), 1, "the RESULT was cut");
    let now = direct.fetch("once.log").await.unwrap();
    assert_eq!(json(&now.value), json!(["entry"]), "applied once");
    assert_eq!(now.version, version, "the caller got the original version");
    let history = direct.history("once.log", None, None).await.unwrap();
    assert_eq!(history.entries.len(), 1, "{history:?}");

    // The same for a transaction and a conditional write (whose resend would
    // otherwise conflict with its own first application).
    cutter.arm();
    let tx = c
        .transaction()
        .set_in("once.log", "/-", &"tx")
        .set("once.other", &1)
        .commit()
        .await
        .unwrap();
    cutter.arm();
    let opts = WriteOptions::new().if_version(tx);
    let cas = c.set_in_with("once.log", "/-", &"cas", opts).await.unwrap();
    assert_eq!(cutter.cuts.load(Ordering::SeqCst), 3);
    let now = direct.fetch("once.log").await.unwrap();
    assert_eq!(json(&now.value), json!(["entry", "tx", "cas"]));
    assert_eq!(now.version, cas);
    assert_eq!(
        direct
            .history("once.log", None, None)
            .await
            .unwrap()
            .entries
            .len(),
        3
    );
}

/// An explicit idempotency key makes a retry of the caller's own (here: a
/// second client, as a re-run script would be) exactly-once; reusing it for
/// other content is a 409 call error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_key_makes_a_repeat_a_no_op() {
    let server = TestServer::start();
    let first = client(&server.url()).await;
    let keyed = || WriteOptions::new().idempotency_key("order-1234");
    let v = first
        .set_in_with("orders", "/-", &"1234", keyed())
        .await
        .unwrap();
    let rerun = client(&server.url()).await;
    assert_eq!(
        rerun.set_in_with("orders", "/-", &"1234", keyed()).await,
        Ok(v)
    );
    assert_eq!(
        json(&rerun.fetch("orders").await.unwrap().value),
        json!(["1234"])
    );
    let reused = rerun.set_in_with("orders", "/-", &"other", keyed()).await;
    assert!(
        matches!(reused, Err(Error::Call { code: 409, .. })),
        "{reused:?}"
    );
}

/// Writes made while the connection is down wait (in order) and are applied
/// once after the reconnect; a write in flight at the cut is resent too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_while_disconnected_go_out_after_the_reconnect() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.port).await;
    let c = reconnecting(&proxy.url());
    c.ready().await.unwrap();
    let direct = client(&server.url()).await;
    direct.set("offline.log", &json!([])).await.unwrap();

    proxy.cut();
    eventually(
        "disconnected",
        || c.status(),
        |s| *s != sodp_client::Status::Connected,
    )
    .await;
    let writes: Vec<_> = (0..5)
        .map(|n| {
            let c = c.clone();
            tokio::spawn(async move { c.set_in("offline.log", "/-", &n).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        json(&direct.fetch("offline.log").await.unwrap().value),
        json!([])
    );
    proxy.restore();
    let mut versions = vec![];
    for w in writes {
        versions.push(w.await.unwrap().unwrap());
    }
    let log = direct.fetch("offline.log").await.unwrap();
    let mut got: Vec<u64> = serde_json::from_value(json(&log.value)).unwrap();
    got.sort();
    assert_eq!(got, [0, 1, 2, 3, 4], "each applied once");
    assert_eq!(log.version, *versions.iter().max().unwrap());
}

/// A write over the server's message limit makes the server close the
/// connection; it is not resent in a loop but fails with a clear error, and
/// the client carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_write_is_not_resent_forever() {
    let server = TestServer::start_with(&["--max-message-bytes", "4096"]);
    let c = reconnecting(&server.url());
    c.ready().await.unwrap();
    let big = "x".repeat(10_000);
    let started = std::time::Instant::now();
    let result = c.set("big.k", &big).await;
    assert!(
        matches!(&result, Err(Error::Connection(m)) if m.contains("max_message_bytes of 4096")),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed promptly"
    );
    assert!(c.set("small.k", &1).await.is_ok());
}
