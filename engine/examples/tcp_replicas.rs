//! Replicas that talk over TCP: how to plug your own [`Transport`] into
//! [`Replica::open`], as replicas in separate processes or machines do.
//!
//! Three replicas run here in one process, but every message between them
//! goes through a real socket on 127.0.0.1, framed as a 4-byte little-endian
//! length followed by [`Envelope::encode`]'s bytes. Each replica would run the
//! same code in its own process, given its id, its directory and the
//! addresses of the others.
//!
//! The transport follows the two rules of the trait:
//! - `send` never blocks: it hands the frame to a bounded queue per peer, and
//!   a writer thread per peer (re)connects and writes. A full queue or a peer
//!   that is down loses the message, which raft retransmits.
//! - everything received goes to the replica's [`Inbox`], which drops (and
//!   counts) what belongs to another cluster or another replica.
//!
//! The example writes through whichever replica leads (forwarding on
//! `NotLeader`, as a client library would), stops the leader, writes through
//! the new one, and checks that the survivors hold every write.
//!
//! ```sh
//! cargo run -p tandem --example tcp_replicas
//! ```

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use tandem::sm::{Command, CommandResult};
use tandem::transport::TransportError;
use tandem::{Config, Envelope, Error, Inbox, Replica, Transport, WriteBatch};

/// Frames queued per peer before `send` starts dropping.
const QUEUE: usize = 4096;
/// A frame larger than this is refused on receipt (a corrupt length).
const FRAME_MAX: usize = 64 << 20;

/// Outgoing side: one bounded queue and one writer thread per peer.
struct TcpTransport {
    queues: HashMap<u64, Sender<Vec<u8>>>,
}

impl TcpTransport {
    fn new(peers: &HashMap<u64, SocketAddr>) -> TcpTransport {
        let queues = peers
            .iter()
            .map(|(&id, &addr)| {
                let (tx, rx) = bounded(QUEUE);
                std::thread::Builder::new()
                    .name(format!("tcp-to-{id}"))
                    .spawn(move || write_to(addr, &rx))
                    .expect("spawn writer");
                (id, tx)
            })
            .collect();
        TcpTransport { queues }
    }
}

impl Transport for TcpTransport {
    fn send(&self, envelope: Envelope) -> Result<(), TransportError> {
        let to = envelope.to;
        let queue = self
            .queues
            .get(&to)
            .ok_or(TransportError::UnknownPeer(to))?;
        match queue.try_send(envelope.encode()) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                Err(TransportError::Unreachable(to))
            }
        }
    }
}

/// Write queued frames to `addr`, reconnecting after any error. A frame
/// that fails mid-write is lost; raft resends what matters.
fn write_to(addr: SocketAddr, rx: &Receiver<Vec<u8>>) {
    let mut conn: Option<BufWriter<TcpStream>> = None;
    while let Ok(frame) = rx.recv() {
        if conn.is_none() {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(BufWriter::new(s));
                }
                // Peer down: drop the frame, try again with the next one.
                Err(_) => continue,
            }
        }
        let w = conn.as_mut().expect("connected");
        let mut ok = write_frame(w, &frame).is_ok();
        // Whatever queued up meanwhile goes out in the same flush.
        while ok {
            match rx.try_recv() {
                Ok(more) => ok = write_frame(w, &more).is_ok(),
                Err(_) => break,
            }
        }
        if !ok || w.flush().is_err() {
            conn = None;
        }
    }
}

fn write_frame(w: &mut impl Write, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(&(frame.len() as u32).to_le_bytes())?;
    w.write_all(frame)
}

/// Incoming side: accept connections and hand every frame to `inbox`.
fn serve(listener: TcpListener, inbox: Inbox) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let inbox = inbox.clone();
            std::thread::spawn(move || read_from(stream, &inbox));
        }
    });
}

fn read_from(stream: TcpStream, inbox: &Inbox) {
    let mut r = BufReader::new(stream);
    let mut len = [0u8; 4];
    while r.read_exact(&mut len).is_ok() {
        let n = u32::from_le_bytes(len) as usize;
        if n > FRAME_MAX {
            return; // a corrupt stream: drop the connection
        }
        let mut frame = vec![0u8; n];
        if r.read_exact(&mut frame).is_err() {
            return;
        }
        match Envelope::decode(&frame) {
            Ok(env) => {
                inbox.deliver(env);
            }
            Err(e) => {
                eprintln!("dropping a malformed frame: {e}");
                return;
            }
        }
    }
}

/// Propose `command` through the leader, following `NotLeader` hints; the
/// result and the replica that took it.
fn write(
    replicas: &HashMap<u64, Replica>,
    command: &Command,
) -> tandem::Result<(CommandResult, u64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut target = *replicas.keys().next().expect("a replica");
    loop {
        let r = &replicas[&target];
        match r.propose_wait(command.encode(), Duration::from_secs(5)) {
            Err(Error::NotLeader { leader }) if Instant::now() < deadline => {
                // Follow the hint if it names a replica we run; otherwise
                // try the next one after a pause (an election is under way).
                target = match leader.filter(|l| replicas.contains_key(l)) {
                    Some(l) => l,
                    None => {
                        std::thread::sleep(Duration::from_millis(50));
                        let mut ids: Vec<u64> = replicas.keys().copied().collect();
                        ids.sort_unstable();
                        let next = ids.iter().position(|&i| i == target).map_or(0, |p| p + 1);
                        ids[next % ids.len()]
                    }
                };
            }
            other => return other.map(|result| (result, target)),
        }
    }
}

/// Write `key-<i>` = `value <i>` for every i in `keys`, one write each;
/// returns the replica that took the last one (the leader).
fn write_keys(replicas: &HashMap<u64, Replica>, keys: std::ops::Range<u32>) -> tandem::Result<u64> {
    let mut leader = 0;
    for i in keys {
        let mut batch = WriteBatch::new();
        batch.insert(
            format!("key-{i:03}").into_bytes(),
            format!("value {i}").into_bytes(),
        );
        leader = write(replicas, &Command::Batch(batch))?.1;
    }
    Ok(leader)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn open(id: u64, root: &Path, addrs: &HashMap<u64, SocketAddr>) -> tandem::Result<Replica> {
    let mut cfg = Config::new(id);
    cfg.cluster_id = 7;
    let peers: HashMap<u64, SocketAddr> = addrs
        .iter()
        .filter(|(&p, _)| p != id)
        .map(|(&p, &a)| (p, a))
        .collect();
    let transport = Arc::new(TcpTransport::new(&peers));
    let voters: Vec<u64> = {
        let mut v: Vec<u64> = addrs.keys().copied().collect();
        v.sort_unstable();
        v
    };
    Replica::open(
        &cfg,
        &root.join(format!("node-{id}")),
        transport,
        Some(&voters),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = tempfile::tempdir()?;
    // Bind first, so every replica knows every address before it starts.
    let listeners: HashMap<u64, TcpListener> = (1..=3)
        .map(|id| Ok((id, TcpListener::bind("127.0.0.1:0")?)))
        .collect::<std::io::Result<_>>()?;
    let addrs: HashMap<u64, SocketAddr> = listeners
        .iter()
        .map(|(&id, l)| Ok((id, l.local_addr()?)))
        .collect::<std::io::Result<_>>()?;
    let mut replicas = HashMap::new();
    for (id, listener) in listeners {
        let replica = open(id, root.path(), &addrs)?;
        serve(listener, replica.inbox());
        println!("replica {id} listening on {}", addrs[&id]);
        replicas.insert(id, replica);
    }

    let leader = write_keys(&replicas, 0..100)?;
    println!("100 writes acknowledged; replica {leader} leads");

    // Stop the leader; the other two elect a new one over TCP.
    replicas
        .remove(&leader)
        .expect("leader runs here")
        .shutdown();
    let new_leader = write_keys(&replicas, 100..150)?;
    assert_ne!(new_leader, leader);
    println!("replica {leader} stopped; 50 more writes through replica {new_leader}");

    // Both survivors apply everything and hold the same 150 keys.
    let commit = replicas[&new_leader].status()?.commit;
    wait_until("both survivors to apply", || {
        replicas
            .values()
            .all(|r| r.status().is_ok_and(|s| s.applied >= commit))
    });
    for (id, r) in &replicas {
        let sm = r.state_machine();
        for i in 0..150 {
            let got = sm.get(format!("key-{i:03}").as_bytes())?;
            assert_eq!(
                got.as_deref(),
                Some(format!("value {i}").as_bytes()),
                "replica {id}, key-{i:03}"
            );
        }
        let inbox = r.inbox();
        let c = inbox.counters();
        println!(
            "replica {id}: all 150 keys; {} envelopes received over TCP",
            c.received.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    Ok(())
}
