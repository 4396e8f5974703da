//! The simulated world: replicas, network, disks, clients, faults.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use sled::IVec;
use tandem_raft::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, HardState,
    StateRole,
};
use tandem_wal::{CrashSpec, Durable, Notify, SimFs, Wal, WalOptions};

use super::{replay_command, PlantedBug, SeedStats, SimFailure, SimOptions};
use crate::config::{Config, ReadConsistency, SnapshotConfig};
use crate::error::Error;
use crate::node::oneshot::{self, TryRecvError};
use crate::node::{
    ApplyTask, Effects, NodeCore, SnapshotCatalog, SnapshotEvent, SnapshotHost, SnapshotJob,
};
use crate::sm::conf::conf_members;
use crate::sm::{
    Cas, Command, CommandResult, DiskStorage, SnapshotStore, StateMachine, WriteBatch,
};
use crate::transport::{Envelope, Payload};
use crate::verify::invariants::{EntryId, InvariantChecker, ReplicaView};
use crate::verify::{check, CheckResult, HistoryRecorder, Op, OpId, Output, Scheduler, TieOrder};
use tandem_snapshot::TransferMsg;

/// Events run after the final power loss and restart (no faults).
const RECOVERY_EVENTS: u64 = 1_200;

/// Events a member still behind after them is given to catch up.
const CATCH_UP_EVENTS_MAX: u64 = 20_000;

/// Simulated microseconds per raft tick.
const TICK_US: u64 = 10_000;
/// Most sled images kept between two flushes (older intermediate ones are
/// dropped; the flushed and the newest are always kept).
const IMAGES_MAX: usize = 16;

type Core = NodeCore<DiskStorage, CommandResult>;
type Image = Vec<(IVec, IVec)>;

/// Remember sled's current contents as a state a crash may leave behind
/// (bounded: the middle of a long run of images is thinned out).
fn push_image(images: &mut VecDeque<Image>, sm: &StateMachine) -> Result<(), String> {
    let image = sm.raw_image().map_err(err("image"))?;
    if images.len() == IMAGES_MAX {
        images.remove(IMAGES_MAX / 2);
    }
    images.push_back(image);
    Ok(())
}

#[derive(Debug)]
enum Event {
    Tick(u64),
    Deliver(Box<Envelope>),
    /// Run one snapshot job of a replica (its maintenance / IO threads).
    Snapshot {
        id: u64,
        incarnation: u64,
        job: Box<SnapshotJob>,
    },
    /// Pump the WAL of a replica (write + fsync what was submitted).
    Sync {
        id: u64,
        incarnation: u64,
    },
    /// Apply the next committed batch of a replica.
    Apply {
        id: u64,
        incarnation: u64,
    },
    /// Make a replica's state machine durable (periodically, on its own).
    Flush(u64),
    /// The same, asked for by the node (`Effects::flush_durable`).
    FlushAsked {
        id: u64,
        incarnation: u64,
    },
    Crash(u64),
    Restart(u64),
    FailSync(u64),
    Partition,
    Heal,
    /// Hold the messages of one directed link for a while.
    Clog,
    Transfer,
    Membership,
    Client(u64),
}

/// A compact, cheap record of an event for the failure trace.
#[derive(Clone, Debug)]
struct TraceLine {
    time: u64,
    what: String,
}

struct Live {
    /// The same storage the core reads, for compaction.
    storage: DiskStorage,
    /// The snapshot host (builds, chunks, staging, install).
    store: Arc<SnapshotStore>,
    core: Core,
    wal: Arc<Wal>,
    sm: Arc<StateMachine>,
    durable_rx: Receiver<Durable>,
    durable_tx: Sender<Durable>,
    /// Messages riding submitted tasks ([`crate::node::PersistTask::messages`], as in
    /// the runtime), sent when the WAL reports the task durable.
    riding: std::collections::HashMap<u64, Vec<tandem_raft::Message>>,
    applying: VecDeque<ApplyTask<CommandResult>>,
    sync_scheduled: bool,
    apply_scheduled: bool,
    /// When the last snapshot job handed to the snapshot IO thread runs,
    /// and the same for the maintenance thread (builds): each thread takes
    /// its jobs in order, as in the runtime, so a job never overtakes one
    /// handed over before it.
    snap_io_at: u64,
    maint_at: u64,
}

struct Replica {
    id: u64,
    fs: SimFs,
    incarnation: u64,
    live: Option<Live>,
    /// sled image as of the last `flush_durable`.
    durable_image: Image,
    /// Images after each apply since then, oldest first.
    images: VecDeque<Image>,
    /// Removed from the cluster: stays down.
    removed: bool,
    /// Cached entry ids of its log, from index `cache_first` on.
    log_cache: Vec<EntryId>,
    cache_first: u64,
}

enum Pending {
    Write {
        op: OpId,
        rx: oneshot::Receiver<crate::Result<CommandResult>>,
    },
    Read {
        op: OpId,
        key: Vec<u8>,
        replica: u64,
        rx: oneshot::Receiver<crate::Result<u64>>,
    },
}

struct Client {
    seq: u64,
    pending: Option<Pending>,
}

struct World {
    opts: SimOptions,
    sched: Scheduler<Event>,
    base: Instant,
    /// This seed's files (sled databases, snapshots); removed on drop.
    base_dir: PathBuf,
    replicas: BTreeMap<u64, Replica>,
    checker: InvariantChecker,
    history: HistoryRecorder,
    clients: Vec<Client>,
    /// Replicas on the minority side of a partition (empty: healed).
    isolated: BTreeSet<u64>,
    /// Directed links `(from, to)` that hold their messages until a time.
    clogged: BTreeMap<(u64, u64), u64>,
    trace: VecDeque<TraceLine>,
    stats: SeedStats,
    initial_voters: Vec<u64>,
    spare: u64,
    /// Drawn per seed, the same for every replica: both settings are
    /// supported configurations and exercise different paths.
    pre_vote: bool,
    check_quorum: bool,
    /// The compaction threshold drawn for this seed (small in half of them).
    compact_log_entries: u64,
    /// Small lag bounds `(entries, bytes)` drawn for this seed (half of
    /// them; see [`lag_bounds`]); `None`: the defaults.
    lag_bounds: Option<(u64, u64)>,
    /// Set after the final power loss: faults stop, clients go on.
    calm: bool,
    /// Index and configuration of the newest membership change applied
    /// anywhere.
    latest_conf: (u64, ConfState),
    /// Every replica that has been in one of those configurations, with the
    /// index of the first that held it (0: an initial voter). Like etcd, the
    /// cluster never reuses the id of a removed replica: only replicas never
    /// in one may be added, and a configuration without a replica, past the
    /// one that added it, is its removal.
    joined: BTreeMap<u64, u64>,
}

/// The directory of one incarnation's sled database, under the seed's directory.
fn sled_path(base: &Path, id: u64, incarnation: u64) -> PathBuf {
    base.join(format!("sm-r{id}-i{incarnation}"))
}

/// A directory of this seed's files (sled, snapshots), unique in the
/// process, removed when the world is dropped.
fn seed_dir(parent: &Path, seed: u64) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    parent.join(format!("tandem-sim-{}-{n}-s{seed}", std::process::id()))
}

/// Small lag bounds for half of the seeds: a follower that falls behind is
/// then compacted past and catches up by snapshot (the defaults, 50 000
/// entries and 512 MiB, are never reached within a seed), and one back from
/// a snapshot replays past the bounds. Drawn from the seed by a generator of
/// its own, so that the scheduler's draws of a seed are those it had before
/// this setting existed.
fn lag_bounds(seed: u64) -> Option<(u64, u64)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x1A6B_0D5E_ED5E_ED00);
    rng.gen_bool(0.5)
        .then(|| (rng.gen_range(4..=64), rng.gen_range(4096..=64 * 1024)))
}

/// `id` is in the configuration, on either side if it is joint.
fn is_member(cs: &ConfState, id: u64) -> bool {
    conf_members(cs).any(|m| m == id)
}

fn wal_options() -> WalOptions {
    // Small segments and cache, so segment rotation, deletion by
    // compaction and reads from the disk all happen within a seed.
    WalOptions {
        segment_bytes: 12 * 1024,
        cache_bytes_max: 4 * 1024,
        entry_bytes_max: 2 * 1024,
        batch_bytes_max: 8 * 1024,
        pending_bytes_max: 16 * 1024,
        background_threads: false,
        prefill_segments: false,
        ..WalOptions::default()
    }
}

fn wal_dir() -> &'static Path {
    Path::new("/wal")
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl World {
    fn new(opts: &SimOptions) -> Result<World, String> {
        let mut sched = Scheduler::new(opts.seed, TieOrder::Random);
        let pre_vote = sched.chance(1, 2);
        let check_quorum = sched.chance(3, 4);
        let compact_log_entries = if sched.chance(1, 2) {
            sched.random_in(8, 64)
        } else {
            SnapshotConfig::default().compact_log_entries
        };
        let initial_voters: Vec<u64> = (1..=opts.replicas).collect();
        let spare = opts.replicas + 1;
        let mut w = World {
            opts: opts.clone(),
            sched,
            base: Instant::now(),
            base_dir: seed_dir(&opts.sled_dir, opts.seed),
            replicas: BTreeMap::new(),
            checker: InvariantChecker::new(),
            history: HistoryRecorder::new(),
            clients: (0..opts.clients)
                .map(|_| Client {
                    seq: 0,
                    pending: None,
                })
                .collect(),
            isolated: BTreeSet::new(),
            clogged: BTreeMap::new(),
            trace: VecDeque::new(),
            stats: SeedStats::default(),
            initial_voters: initial_voters.clone(),
            spare,
            pre_vote,
            check_quorum,
            compact_log_entries,
            lag_bounds: lag_bounds(opts.seed),
            calm: false,
            latest_conf: (0, ConfState::from_voters(initial_voters.iter().copied())),
            joined: initial_voters.iter().map(|&id| (id, 0)).collect(),
        };
        for id in 1..=spare {
            w.create_replica(id, id != spare)?;
        }
        for id in 1..=spare {
            let first = w.sched.random_in(1, TICK_US);
            w.sched.schedule_after(first, Event::Tick(id));
            let flush = w.sched.random_in(50_000, 200_000);
            w.sched.schedule_after(flush, Event::Flush(id));
        }
        for c in 0..opts.clients {
            let at = w.sched.random_in(100_000, 300_000);
            w.sched.schedule_after(at, Event::Client(c));
        }
        if opts.faults {
            w.schedule_faults();
        }
        Ok(w)
    }

    fn schedule_faults(&mut self) {
        let at = self.sched.random_in(200_000, 1_000_000);
        self.sched.schedule_after(at, Event::Partition);
        let at = self.sched.random_in(50_000, 500_000);
        self.sched.schedule_after(at, Event::Clog);
        let at = self.sched.random_in(300_000, 1_500_000);
        self.sched.schedule_after(at, Event::Transfer);
        let at = self.sched.random_in(300_000, 1_000_000);
        self.sched.schedule_after(at, Event::Membership);
        let at = self.sched.random_in(200_000, 800_000);
        let victim = self.sched.random_in(1, self.spare);
        self.sched.schedule_after(at, Event::Crash(victim));
        let at = self.sched.random_in(200_000, 1_000_000);
        let victim = self.sched.random_in(1, self.spare);
        self.sched.schedule_after(at, Event::FailSync(victim));
    }

    fn config(&self, id: u64) -> Config {
        let mut cfg = Config {
            election_ticks: 10,
            heartbeat_ticks: 2,
            request_timeout: Duration::from_secs(2),
            seed: self.opts.seed.wrapping_mul(0x9E37_79B9).wrapping_add(id) | 1,
            max_size_per_msg_bytes: 1024,
            max_inflight_msgs: 16,
            pre_vote: self.pre_vote,
            check_quorum: self.check_quorum,
            snapshot: {
                let mut s = SnapshotConfig {
                    compact_log_entries: self.compact_log_entries,
                    compact_log_bytes: 4096.max(self.compact_log_entries * 64),
                    ..SnapshotConfig::default()
                };
                if let Some((entries, bytes)) = self.lag_bounds {
                    s.lag_entries_max = entries;
                    s.lag_bytes_max = bytes;
                }
                s
            },
            ..Config::new(id)
        };
        #[cfg(feature = "planted-bugs")]
        if let PlantedBug::Raft(bug) = self.opts.planted {
            cfg.planted_bug = bug;
        }
        #[cfg(not(feature = "planted-bugs"))]
        let _ = &mut cfg;
        cfg
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_micros(self.sched.now())
    }

    /// A brand-new replica: a bootstrapped voter or the spare (which knows
    /// the initial membership, as `Replica::open_joining` does).
    fn create_replica(&mut self, id: u64, voter: bool) -> Result<(), String> {
        let fs = SimFs::new();
        let sm = StateMachine::open_sim(self.base_dir.join(format!("sm-r{id}-boot")), &[])
            .map_err(err("open state machine"))?;
        sm.bootstrap(&ConfState::from_voters(self.initial_voters.iter().copied()))
            .map_err(err("bootstrap"))?;
        let wal = Wal::open_with_fs(Arc::new(fs.clone()), wal_dir(), wal_options())
            .map_err(err("open wal"))?;
        if voter {
            let entries = crate::replica::bootstrap_entries(&self.initial_voters);
            let hs = HardState {
                term: 1,
                vote: 0,
                commit: entries.len() as u64,
            };
            let c = wal.submit(entries, Some(hs)).map_err(err("bootstrap"))?;
            c.wait().map_err(err("bootstrap"))?;
        }
        let durable_image = sm.raw_image().map_err(err("image"))?;
        drop(wal);
        let mut r = Replica {
            id,
            fs,
            incarnation: 0,
            live: None,
            durable_image,
            images: VecDeque::new(),
            removed: false,
            log_cache: Vec::new(),
            cache_first: 1,
        };
        drop(sm);
        self.start(&mut r)?;
        self.replicas.insert(id, r);
        Ok(())
    }

    /// Start (or restart) a replica from what its disks hold: the engine's
    /// own recovery path.
    fn start(&mut self, r: &mut Replica) -> Result<(), String> {
        r.incarnation += 1;
        let image = r.durable_image.clone();
        let sm = Arc::new(
            StateMachine::open_sim(sled_path(&self.base_dir, r.id, r.incarnation), &image)
                .map_err(err("reopen state machine"))?,
        );
        let wal = Arc::new(
            Wal::open_with_fs(Arc::new(r.fs.clone()), wal_dir(), wal_options())
                .map_err(err("recover wal"))?,
        );
        let (store, newest) = SnapshotStore::open(
            Arc::clone(&sm),
            &self.base_dir.join(format!("snap-r{}", r.id)),
            &self.config(r.id).snapshot,
        )
        .map_err(err("open snapshot store"))?;
        let catalog = Arc::new(SnapshotCatalog::default());
        let storage = DiskStorage::open(Arc::clone(&wal), Arc::clone(&sm))
            .map_err(err("open disk storage"))?
            .with_catalog(Arc::clone(&catalog));
        storage.replay_committed().map_err(err("replay"))?;
        let applied = sm.applied_index();
        let incarnation = (self.opts.seed << 16) ^ (r.id << 8) ^ r.incarnation;
        let core = NodeCore::new(&self.config(r.id), storage.clone(), applied, incarnation)
            .map_err(err("start node core"))?
            .with_removed(sm.removed())
            .with_snapshots(catalog, newest);
        let (durable_tx, durable_rx) = unbounded();
        r.durable_image = sm.raw_image().map_err(err("image"))?;
        r.images.clear();
        r.log_cache.clear();
        r.live = Some(Live {
            storage,
            store: Arc::new(store),
            core,
            wal,
            sm,
            durable_rx,
            durable_tx,
            riding: std::collections::HashMap::new(),
            applying: VecDeque::new(),
            sync_scheduled: false,
            apply_scheduled: false,
            snap_io_at: 0,
            maint_at: 0,
        });
        Ok(())
    }

    fn trace(&mut self, what: impl FnOnce() -> String) {
        if self.opts.trace_events == 0 {
            return;
        }
        if self.trace.len() == self.opts.trace_events {
            self.trace.pop_front();
        }
        self.trace.push_back(TraceLine {
            time: self.sched.now(),
            what: what(),
        });
    }

    fn leader(&self) -> Option<u64> {
        self.replicas
            .values()
            .filter_map(|r| r.live.as_ref().map(|l| (r.id, l)))
            .filter(|(_, l)| l.core.is_leader())
            .max_by_key(|(_, l)| l.core.raw().raft.term)
            .map(|(id, _)| id)
    }

    /// Liveness, with every replica up and the network healed: the cluster
    /// elects a leader and answers a client, then every member catches up
    /// with what that leader has committed. A seed may need more than the
    /// recovery events for it (split votes, a lost message made up for by
    /// a retransmission): it gets up to [`CATCH_UP_EVENTS_MAX`] more.
    fn check_liveness(&mut self, ops_before: u64) -> Result<(), String> {
        let mut extra = 0;
        let mut more = |w: &mut World, what: &dyn Fn(&World) -> String| {
            if extra == CATCH_UP_EVENTS_MAX || !w.step()? {
                return Err(format!(
                    "liveness: {} in {} events after the power loss, with every replica up and \
                     no faults; newest configuration {:?}; {}",
                    what(w),
                    RECOVERY_EVENTS + extra,
                    w.latest_conf.1,
                    w.describe_replicas()
                ));
            }
            extra += 1;
            Ok(())
        };
        while self.stats.ops_ok == ops_before {
            more(self, &|_| "no client operation answered".into())?;
        }
        let (leader, committed, cs) = loop {
            if let Some(l) = self.leader() {
                let raft = &self.replicas[&l]
                    .live
                    .as_ref()
                    .expect("leader is live")
                    .core
                    .raw()
                    .raft;
                break (
                    l,
                    raft.raft_log.committed,
                    raft.prs().conf().to_conf_state(),
                );
            }
            more(self, &|_| "no leader after a client was answered".into())?;
        };
        let behind = |w: &World| {
            w.replicas
                .values()
                .find(|r| {
                    r.live.as_ref().is_some_and(|l| {
                        is_member(&cs, r.id) && l.core.raw().raft.raft_log.committed < committed
                    })
                })
                .map(|r| r.id)
        };
        while let Some(id) = behind(self) {
            more(self, &|_| {
                format!("replica {id} did not catch up with what leader {leader} had committed ({committed})")
            })?;
        }
        Ok(())
    }

    /// One line per replica: up or down, role, term, commit, applied and
    /// the configuration it holds.
    fn describe_replicas(&self) -> String {
        let lines: Vec<String> = self
            .replicas
            .values()
            .map(|r| match &r.live {
                None if r.removed => format!("replica {}: removed", r.id),
                None => format!("replica {}: down", r.id),
                Some(l) => {
                    let raft = &l.core.raw().raft;
                    format!(
                        "replica {}: {:?} term {} commit {} applied {} last {} {:?} removed {:?} \
                         ({} messages dropped from them)",
                        r.id,
                        raft.state,
                        raft.term,
                        raft.raft_log.committed,
                        l.sm.applied_index(),
                        raft.raft_log.last_index(),
                        raft.prs().conf().to_conf_state(),
                        l.core.removed(),
                        l.core.counters().dropped_from_removed
                    )
                }
            })
            .collect();
        lines.join("; ")
    }

    fn is_live(&self, id: u64, incarnation: u64) -> bool {
        let r = &self.replicas[&id];
        r.incarnation == incarnation && r.live.is_some()
    }

    fn live_mut(&mut self, id: u64) -> Option<&mut Live> {
        self.replicas.get_mut(&id).and_then(|r| r.live.as_mut())
    }

    fn step(&mut self) -> Result<bool, String> {
        let Some((_, _, event)) = self.sched.pop() else {
            return Ok(false);
        };
        self.stats.events += 1;
        if self.calm
            && matches!(
                event,
                Event::Crash(_)
                    | Event::FailSync(_)
                    | Event::Clog
                    | Event::Partition
                    | Event::Transfer
                    | Event::Membership
            )
        {
            // After the power loss: no more faults (not rescheduled).
            return Ok(true);
        }
        let now = self.now();
        let mut touched = None;
        match event {
            Event::Tick(id) => {
                let r = self.replicas.get_mut(&id).expect("replica");
                if let Some(live) = r.live.as_mut() {
                    live.core.tick(now);
                    // The apply thread writes held applied entries to sled
                    // once per tick (a crash before then loses them; the
                    // restart re-applies them from the log).
                    if live.sm.flush_pending().map_err(err("write held applies"))? {
                        push_image(&mut r.images, &live.sm)?;
                    }
                    touched = Some(id);
                }
                if !self.replicas[&id].removed {
                    self.sched.schedule_after(TICK_US, Event::Tick(id));
                }
            }
            Event::Deliver(env) => {
                let (from, to) = (env.from, env.to);
                let cut = self.isolated.contains(&from) != self.isolated.contains(&to);
                if cut {
                    self.trace(|| {
                        format!("drop (partition) {} {from}->{to}", describe_payload(&env))
                    });
                } else if let Some(live) = self.live_mut(to) {
                    let line = format!("deliver {} {from}->{to}", describe_payload(&env));
                    live.core.step(*env);
                    self.trace(|| line);
                    touched = Some(to);
                }
            }
            Event::Snapshot {
                id,
                incarnation,
                job,
            } => {
                if self.is_live(id, incarnation) {
                    self.snapshot_job(id, *job)?;
                    touched = Some(id);
                }
            }
            Event::Sync { id, incarnation } => {
                if self.is_live(id, incarnation) {
                    self.sync(id)?;
                    touched = Some(id);
                }
            }
            Event::Apply { id, incarnation } => {
                if self.is_live(id, incarnation) {
                    self.apply_one(id)?;
                    touched = Some(id);
                }
            }
            Event::Flush(id) => {
                if self.replicas[&id].live.is_some() {
                    self.flush(id)?;
                    touched = Some(id);
                }
                if !self.replicas[&id].removed {
                    let next = self.sched.random_in(50_000, 300_000);
                    self.sched.schedule_after(next, Event::Flush(id));
                }
            }
            Event::FlushAsked { id, incarnation } => {
                if self.is_live(id, incarnation) {
                    self.flush(id)?;
                    touched = Some(id);
                }
            }
            Event::Crash(id) => {
                if self.replicas[&id].live.is_some() {
                    self.crash(id)?;
                    self.check_durability_now(&format!("after the crash of {id}"))?;
                    let down = self.sched.random_in(20_000, 600_000);
                    self.sched.schedule_after(down, Event::Restart(id));
                }
                if self.opts.faults {
                    let next = self.sched.random_in(100_000, 900_000);
                    let victim = self.sched.random_in(1, self.spare);
                    self.sched.schedule_after(next, Event::Crash(victim));
                }
            }
            Event::Restart(id) => {
                let mut r = self.replicas.remove(&id).expect("replica");
                let res = if r.live.is_none() && !r.removed {
                    self.trace(|| format!("restart {id}"));
                    self.start(&mut r)
                } else {
                    Ok(())
                };
                self.replicas.insert(id, r);
                res?;
                touched = Some(id);
            }
            Event::FailSync(id) => {
                if self.replicas[&id].live.is_some() {
                    self.trace(|| format!("fsync of {id} will fail"));
                    self.replicas[&id].fs.fail_next_sync();
                    self.stats.sync_failures += 1;
                }
                let next = self.sched.random_in(300_000, 2_000_000);
                let victim = self.sched.random_in(1, self.spare);
                self.sched.schedule_after(next, Event::FailSync(victim));
            }
            Event::Clog => {
                let from = self.sched.random_in(1, self.spare);
                let to = self.sched.random_in(1, self.spare);
                let now = self.sched.now();
                let until = now + self.sched.random_in(50_000, 700_000);
                self.clogged.retain(|_, &mut u| u > now);
                self.clogged.insert((from, to), until);
                self.trace(|| format!("clog {from}->{to} until t={until}us"));
                let next = self.sched.random_in(50_000, 600_000);
                self.sched.schedule_after(next, Event::Clog);
            }
            Event::Partition => {
                self.isolated.clear();
                let n = self.sched.random_in(1, 2);
                for _ in 0..n {
                    let id = self.sched.random_in(1, self.spare);
                    self.isolated.insert(id);
                }
                let isolated = self.isolated.clone();
                self.trace(|| format!("partition: {isolated:?} cut off"));
                let heal = self.sched.random_in(50_000, 800_000);
                self.sched.schedule_after(heal, Event::Heal);
            }
            Event::Heal => {
                self.isolated.clear();
                self.trace(|| "heal".into());
                let next = self.sched.random_in(200_000, 1_500_000);
                self.sched.schedule_after(next, Event::Partition);
            }
            Event::Transfer => {
                if let Some(l) = self.leader() {
                    let to = self.sched.random_in(1, self.spare);
                    let res = self
                        .live_mut(l)
                        .expect("leader is live")
                        .core
                        .transfer_leader(to);
                    self.trace(|| format!("transfer leadership {l} -> {to}: {res:?}"));
                    touched = Some(l);
                }
                let next = self.sched.random_in(300_000, 2_000_000);
                self.sched.schedule_after(next, Event::Transfer);
            }
            Event::Membership => {
                touched = self.membership_change(now);
                let next = self.sched.random_in(300_000, 1_500_000);
                self.sched.schedule_after(next, Event::Membership);
            }
            Event::Client(c) => {
                touched = self.client_start(c, now);
            }
        }
        if let Some(id) = touched {
            self.drive(id)?;
        }
        self.poll_clients();
        self.observe()?;
        Ok(true)
    }

    /// One membership change, chosen from the current configuration of the
    /// leader:
    /// - in a joint configuration, leave it (unless the leader leaves it by
    ///   itself);
    /// - otherwise, in one of three cases, replace a voter by a learner or a
    ///   non-member through a joint configuration: the voter is removed or
    ///   demoted to learner, and the configuration is left automatically or
    ///   by a later change;
    /// - otherwise promote a learner, add a non-member as learner, or remove
    ///   a voter (never below three voters), in that order of preference.
    fn membership_change(&mut self, now: Instant) -> Option<u64> {
        let l = self.leader()?;
        let cs = self.replicas[&l]
            .live
            .as_ref()
            .expect("leader is live")
            .core
            .raw()
            .raft
            .prs()
            .conf()
            .to_conf_state();
        // Never in any configuration (removed replicas were, so ids are not
        // reused).
        let outsider = (1..=self.spare).find(|id| !self.joined.contains_key(id));
        let learner = cs.learners.first().copied();
        let single = |change_type, node_id| ConfChangeV2 {
            changes: vec![ConfChangeSingle {
                change_type,
                node_id,
            }],
            ..ConfChangeV2::default()
        };
        let cc = if !cs.voters_outgoing.is_empty() {
            if cs.auto_leave {
                return None;
            }
            // An empty change with the automatic transition leaves.
            ConfChangeV2::default()
        } else if let Some(newcomer) = learner.or(outsider).filter(|_| self.sched.chance(1, 3)) {
            let i = self.sched.random_in(0, cs.voters.len() as u64 - 1) as usize;
            let leaving = if self.sched.chance(1, 2) {
                ConfChangeType::RemoveNode
            } else {
                ConfChangeType::AddLearnerNode
            };
            let transition = match self.sched.random_in(0, 2) {
                0 => ConfChangeTransition::Auto,
                1 => ConfChangeTransition::Implicit,
                _ => ConfChangeTransition::Explicit,
            };
            ConfChangeV2 {
                transition,
                changes: vec![
                    ConfChangeSingle {
                        change_type: ConfChangeType::AddNode,
                        node_id: newcomer,
                    },
                    ConfChangeSingle {
                        change_type: leaving,
                        node_id: cs.voters[i],
                    },
                ],
                context: Vec::new(),
            }
        } else if let Some(id) = learner {
            single(ConfChangeType::AddNode, id)
        } else if let Some(id) = outsider {
            single(ConfChangeType::AddLearnerNode, id)
        } else if cs.voters.len() > 3 {
            let i = self.sched.random_in(0, cs.voters.len() as u64 - 1) as usize;
            single(ConfChangeType::RemoveNode, cs.voters[i])
        } else {
            return None;
        };
        let (tx, _rx) = oneshot::channel();
        self.trace(|| format!("leader {l} proposes {cc:?}"));
        self.live_mut(l)
            .expect("leader is live")
            .core
            .propose_conf_change(cc, tx, now);
        Some(l)
    }

    fn client_start(&mut self, c: u64, now: Instant) -> Option<u64> {
        let client = &mut self.clients[c as usize];
        if client.pending.is_some() {
            return None;
        }
        client.seq += 1;
        let seq = client.seq;
        let key = format!("k{}", self.sched.random_in(0, self.opts.keys - 1)).into_bytes();
        let value = format!("c{c}.{seq}").into_bytes();
        let kind = self.sched.random_in(0, 9);
        // Mostly the leader; sometimes a random replica (it refuses).
        let target = match self.leader() {
            Some(l) if !self.sched.chance(1, 10) => l,
            _ => self.sched.random_in(1, self.spare),
        };
        let op = match kind {
            0..=3 => Op::Get { key },
            4..=6 => Op::Insert { key, value },
            7 => Op::Remove { key },
            _ => {
                let expected = if self.sched.chance(1, 3) {
                    None
                } else {
                    // A value some client may have written.
                    let cc = self.sched.random_in(0, self.opts.clients - 1);
                    let s = self.sched.random_in(1, seq.max(2));
                    Some(format!("c{cc}.{s}").into_bytes())
                };
                let new = (!self.sched.chance(1, 4)).then_some(value);
                Op::CompareAndSwap { key, expected, new }
            }
        };
        let lease = self.sched.chance(1, 3);
        if self.replicas[&target].live.is_none() {
            // Nobody answers: the client tries again later.
            let next = self.sched.random_in(10_000, 50_000);
            self.sched.schedule_after(next, Event::Client(c));
            return None;
        }
        let id = self.history.invoke(c, op.clone());
        self.trace(|| format!("client {c}: {id:?} {op:?} to replica {target} (lease: {lease})"));
        let live = self
            .replicas
            .get_mut(&target)
            .and_then(|r| r.live.as_mut())
            .expect("checked live");
        let pending = match op {
            Op::Get { key } => {
                let (tx, rx) = oneshot::channel();
                // ReadIndex, or the leader lease (check-quorum) a third of the time.
                let consistency = if lease {
                    ReadConsistency::Lease
                } else {
                    ReadConsistency::Linearizable
                };
                live.core.read(consistency, tx, now);
                Pending::Read {
                    op: id,
                    key,
                    replica: target,
                    rx,
                }
            }
            Op::Insert { key, value } => {
                let mut b = WriteBatch::new();
                b.insert(key, value);
                propose(&mut live.core, id, &Command::Batch(b), now)
            }
            Op::Remove { key } => {
                let mut b = WriteBatch::new();
                b.remove(key);
                propose(&mut live.core, id, &Command::Batch(b), now)
            }
            Op::CompareAndSwap { key, expected, new } => propose(
                &mut live.core,
                id,
                &Command::Cas(Cas { key, expected, new }),
                now,
            ),
        };
        self.clients[c as usize].pending = Some(pending);
        Some(target)
    }

    /// Collect client answers; a client that got one starts a new
    /// operation a little later.
    fn poll_clients(&mut self) {
        for c in 0..self.clients.len() {
            let Some(p) = self.clients[c].pending.take() else {
                continue;
            };
            let done = match p {
                Pending::Write { op, rx } => match rx.try_recv() {
                    Ok(Ok(result)) => {
                        let output = match result {
                            CommandResult::Cas(Ok(())) => Output::Cas(Ok(())),
                            CommandResult::Cas(Err(m)) => {
                                Output::Cas(Err(m.current.map(|v| v.to_vec())))
                            }
                            _ => Output::Written,
                        };
                        self.history.complete(op, output);
                        self.stats.ops_ok += 1;
                        true
                    }
                    Ok(Err(e @ (Error::NotLeader { .. } | Error::Stale { .. }))) => {
                        // Refused, or its entry was overwritten: no effect.
                        self.trace(|| format!("client {c}: write {op:?} had no effect: {e}"));
                        self.history.fail_no_effect(op);
                        self.stats.ops_failed += 1;
                        true
                    }
                    Ok(Err(e)) => {
                        self.trace(|| format!("client {c}: write {op:?} failed: {e}"));
                        self.history.fail_unknown(op);
                        self.stats.ops_failed += 1;
                        true
                    }
                    Err(TryRecvError::Disconnected) => {
                        self.trace(|| format!("client {c}: write {op:?} lost its replica"));
                        self.history.fail_unknown(op);
                        self.stats.ops_failed += 1;
                        true
                    }
                    Err(TryRecvError::Empty) => {
                        self.clients[c].pending = Some(Pending::Write { op, rx });
                        false
                    }
                },
                Pending::Read {
                    op,
                    key,
                    replica,
                    rx,
                } => match rx.try_recv() {
                    Ok(Ok(_index)) => {
                        // The replica may have stopped in the same event
                        // (e.g. it applied its own removal): then it cannot
                        // serve the read.
                        let value = match self.replicas[&replica].live.as_ref() {
                            Some(live) => live.sm.get(&key).map_err(|e| e.to_string()),
                            None => Err("the replica stopped".to_string()),
                        };
                        match value {
                            Ok(v) => {
                                self.history
                                    .complete(op, Output::Value(v.map(|v| v.to_vec())));
                                self.stats.ops_ok += 1;
                            }
                            Err(_) => {
                                self.history.fail_no_effect(op);
                                self.stats.ops_failed += 1;
                            }
                        }
                        true
                    }
                    Ok(Err(_)) | Err(TryRecvError::Disconnected) => {
                        self.history.fail_no_effect(op);
                        self.stats.ops_failed += 1;
                        true
                    }
                    Err(TryRecvError::Empty) => {
                        self.clients[c].pending = Some(Pending::Read {
                            op,
                            key,
                            replica,
                            rx,
                        });
                        false
                    }
                },
            };
            if done {
                let next = self.sched.random_in(1_000, 30_000);
                self.sched.schedule_after(next, Event::Client(c as u64));
            }
        }
    }

    /// Poll replica `id` until it has nothing to do, carrying out its
    /// effects as the runtime's raft loop does.
    fn drive(&mut self, id: u64) -> Result<(), String> {
        let now = self.now();
        loop {
            let Some(live) = self.live_mut(id) else {
                return Ok(());
            };
            let fx = live.core.poll(now);
            if fx.is_empty() {
                return Ok(());
            }
            // Destructured field by field on purpose: a new kind of effect
            // (e.g. snapshot transfer) does not compile until the simulator
            // carries it out, instead of being silently dropped.
            let Effects {
                send,
                persist,
                apply,
                flush_durable,
                compact,
                transfer,
                snapshot_jobs,
            } = fx;
            let mut submitted = Vec::new();
            for task in persist {
                let number = task.number;
                let live = self.live_mut(id).expect("polled, so live");
                if let Some(snap) = &task.snapshot {
                    // As the runtime's log writer: the state machine already
                    // switched to the snapshot; the log restarts after it.
                    let (index, term) = (snap.metadata.index, snap.metadata.term);
                    if let Err(e) = live.wal.reset_to_snapshot(index, term) {
                        self.trace(|| format!("replica {id}: WAL reset refused ({e}); it stops"));
                        self.crash(id)?;
                        let down = self.sched.random_in(20_000, 300_000);
                        self.sched.schedule_after(down, Event::Restart(id));
                        return Ok(());
                    }
                    self.trace(|| format!("replica {id}: log reset to snapshot {index}@{term}"));
                }
                let live = self.live_mut(id).expect("polled, so live");
                if task.lazy {
                    // As the runtime's log writer: a commit-only hard state
                    // rides with the next group, unsynced unless that group
                    // syncs; nothing waits for it and nothing pumps for it.
                    let hs = task.hard_state.expect("a lazy task carries a hard state");
                    if let Err(e) = live.wal.set_hard_state_lazy(hs) {
                        self.trace(|| format!("replica {id}: WAL refused a write ({e}); it stops"));
                        self.crash(id)?;
                        let down = self.sched.random_in(20_000, 300_000);
                        self.sched.schedule_after(down, Event::Restart(id));
                        return Ok(());
                    }
                    continue;
                }
                let res = live.wal.submit_notify(
                    task.entries,
                    task.hard_state,
                    Notify::Channel {
                        sender: live.durable_tx.clone(),
                        tag: number,
                    },
                );
                if let Err(e) = res {
                    // The runtime stops a replica whose log refuses writes.
                    self.trace(|| format!("replica {id}: WAL refused a write ({e}); it stops"));
                    self.crash(id)?;
                    let down = self.sched.random_in(20_000, 300_000);
                    self.sched.schedule_after(down, Event::Restart(id));
                    return Ok(());
                }
                if !task.messages.is_empty() {
                    live.riding.insert(number, task.messages);
                }
                submitted.push(number);
            }
            let incarnation = self.replicas[&id].incarnation;
            let live = self.live_mut(id).expect("live");
            if !submitted.is_empty() && !live.sync_scheduled {
                live.sync_scheduled = true;
                // fsync latency: usually short, sometimes a slow device.
                let delay = if self.sched.chance(1, 5) {
                    self.sched.random_in(2_000, 30_000)
                } else {
                    self.sched.random_in(200, 2_000)
                };
                self.sched
                    .schedule_after(delay, Event::Sync { id, incarnation });
            }
            if self.opts.planted == PlantedBug::AckBeforeFsync {
                let live = self.live_mut(id).expect("live");
                let mut early = Vec::new();
                for n in submitted {
                    early.extend(live.riding.remove(&n).unwrap_or_default());
                    live.core.on_persisted(n);
                }
                for m in early {
                    self.send(Envelope::raft(1, m));
                }
            }
            if flush_durable {
                // The runtime's maintenance thread, some time later.
                let delay = self.sched.random_in(500, 20_000);
                self.sched
                    .schedule_after(delay, Event::FlushAsked { id, incarnation });
            }
            if let Some(first) = compact {
                let live = self.live_mut(id).expect("live");
                let res = live.storage.compact(first);
                self.trace(|| format!("replica {id} compacts its log below {first}: {res:?}"));
                match res {
                    Ok(_) => self.stats.compactions += 1,
                    Err(crate::sm::Error::CompactBeyondDurable { index, durable }) => {
                        return Err(format!(
                            "replica {id} asked to compact below {index}, past its durable applied index {durable}"
                        ));
                    }
                    Err(e) => {
                        // The runtime stops a replica whose log refuses.
                        self.trace(|| format!("replica {id}: compaction failed ({e}); it stops"));
                        self.crash(id)?;
                        let down = self.sched.random_in(20_000, 300_000);
                        self.sched.schedule_after(down, Event::Restart(id));
                        return Ok(());
                    }
                }
            }
            let live = self.live_mut(id).expect("live");
            let had_apply = !apply.is_empty();
            live.applying.extend(apply);
            if had_apply && !live.apply_scheduled {
                live.apply_scheduled = true;
                let delay = self.sched.random_in(100, 3_000);
                self.sched
                    .schedule_after(delay, Event::Apply { id, incarnation });
            }
            for m in send {
                self.send(Envelope::raft(1, m));
            }
            for (to, msg) in transfer {
                self.send(Envelope {
                    cluster_id: 1,
                    from: id,
                    to,
                    payload: Payload::SnapshotChunk(msg.encode()),
                });
            }
            for job in snapshot_jobs {
                // The maintenance thread (builds) and the snapshot IO thread
                // (everything else), a little later, each in order.
                let delay = self.sched.random_in(200, 10_000);
                let earliest = self.sched.now() + delay;
                let live = self.live_mut(id).expect("live");
                let thread_at = if matches!(job, SnapshotJob::Build) {
                    &mut live.maint_at
                } else {
                    &mut live.snap_io_at
                };
                let at = earliest.max(*thread_at + 1);
                *thread_at = at;
                self.sched.schedule_at(
                    at,
                    Event::Snapshot {
                        id,
                        incarnation,
                        job: Box::new(job),
                    },
                );
            }
        }
    }

    fn send(&mut self, m: Envelope) {
        if self.sched.chance(1, 50) {
            return; // lost
        }
        let copies = if self.sched.chance(1, 50) { 2 } else { 1 };
        for _ in 0..copies {
            // Random delays reorder messages.
            let mut delay = if self.sched.chance(1, 50) {
                // Stuck in a queue or retransmitted: older than an election.
                self.sched.random_in(100_000, 600_000)
            } else if self.sched.chance(1, 20) {
                self.sched.random_in(20_000, 120_000)
            } else {
                self.sched.random_in(100, 8_000)
            };
            // A clogged link holds its messages until it clears.
            if let Some(&until) = self.clogged.get(&(m.from, m.to)) {
                let now = self.sched.now();
                if until > now {
                    delay = delay.max(until - now + self.sched.random_in(0, 2_000));
                }
            }
            self.sched
                .schedule_after(delay, Event::Deliver(Box::new(m.clone())));
        }
    }

    /// One job of the runtime's maintenance / snapshot IO threads, done the
    /// way they do it; the outcome goes back to the node.
    fn snapshot_job(&mut self, id: u64, job: SnapshotJob) -> Result<(), String> {
        let r = self.replicas.get_mut(&id).expect("replica");
        let live = r.live.as_mut().expect("same incarnation is live");
        let host: &dyn SnapshotHost = &*live.store;
        let what = format!("{job:?}").chars().take(80).collect::<String>();
        let mut installed = false;
        let ev = match job {
            SnapshotJob::Build => {
                self.stats.snapshots_built += 1;
                Some(SnapshotEvent::Built(
                    host.build().map_err(|e| e.to_string()),
                ))
            }
            SnapshotJob::SendChunk {
                to,
                id: tid,
                chunk_no,
            } => match host.read_chunk(tid.index, tid.term, chunk_no) {
                Ok(bytes) => {
                    let msg = TransferMsg::Chunk {
                        id: tid,
                        chunk_no,
                        bytes,
                    };
                    let env = Envelope {
                        cluster_id: 1,
                        from: id,
                        to,
                        payload: Payload::SnapshotChunk(msg.encode()),
                    };
                    self.send(env);
                    None
                }
                Err(_) => Some(SnapshotEvent::ChunkUnreadable { to, id: tid }),
            },
            SnapshotJob::Begin { id: tid, manifest } => Some(SnapshotEvent::Begun {
                id: tid,
                result: host.begin_staging(&manifest),
            }),
            SnapshotJob::Stage {
                id: tid,
                chunk_no,
                bytes,
            } => Some(SnapshotEvent::Staged {
                id: tid,
                chunk_no,
                result: host.stage_chunk(chunk_no, &bytes),
            }),
            SnapshotJob::Verify { id: tid } => Some(SnapshotEvent::Verified {
                id: tid,
                result: host.finish_staging(),
            }),
            SnapshotJob::Discard { .. } => {
                host.discard_staging();
                None
            }
            SnapshotJob::Install { id: tid } => {
                let result = host.install(tid.index, tid.term).map_err(|e| e.to_string());
                installed = result.is_ok();
                Some(SnapshotEvent::Installed { id: tid, result })
            }
        };
        self.trace(|| format!("replica {id}: snapshot job {what}"));
        let r = self.replicas.get_mut(&id).expect("replica");
        let live = r.live.as_mut().expect("same incarnation is live");
        if installed {
            // The install is the commit point and is durable (staged files
            // synced, the version switch fsynced): a crash now keeps it.
            self.stats.snapshots_installed += 1;
            r.durable_image = live.sm.raw_image().map_err(err("image"))?;
            r.images.clear();
        }
        if let Some(ev) = ev {
            live.core.on_snapshot_event(ev);
        }
        Ok(())
    }

    /// The maintenance thread's flush: make the state machine durable and
    /// report the durable applied index to the node.
    fn flush(&mut self, id: u64) -> Result<(), String> {
        let r = self.replicas.get_mut(&id).expect("replica");
        let live = r.live.as_mut().expect("flushing a live replica");
        let durable = live.sm.flush_durable().map_err(err("flush"))?;
        r.durable_image = live.sm.raw_image().map_err(err("image"))?;
        r.images.clear();
        live.core.on_durable(durable);
        Ok(())
    }

    /// The WAL writer: write and fsync everything submitted, then report
    /// durability to the node.
    fn sync(&mut self, id: u64) -> Result<(), String> {
        let planted = self.opts.planted;
        let live = self.live_mut(id).expect("same incarnation is live");
        live.sync_scheduled = false;
        let res = live.wal.pump();
        let mut done = Vec::new();
        let mut failed = res.as_ref().err().map(ToString::to_string);
        while let Ok(d) = live.durable_rx.try_recv() {
            match d.result {
                Ok(()) => done.push(d.tag),
                Err(e) => failed = Some(e.to_string()),
            }
        }
        let mut riding = Vec::new();
        if planted != PlantedBug::AckBeforeFsync {
            for n in done {
                // As the runtime's writer: the task's messages leave first.
                riding.extend(live.riding.remove(&n).unwrap_or_default());
                live.core.on_persisted(n);
            }
        }
        for m in riding {
            self.send(Envelope::raft(1, m));
        }
        if let Some(e) = failed {
            self.trace(|| format!("replica {id}: WAL write failed ({e}); it stops"));
            self.crash(id)?;
            let down = self.sched.random_in(20_000, 300_000);
            self.sched.schedule_after(down, Event::Restart(id));
        }
        Ok(())
    }

    /// The apply thread: apply one task to sled, answer its waiters, report
    /// the applied index.
    fn apply_one(&mut self, id: u64) -> Result<(), String> {
        let r = self.replicas.get_mut(&id).expect("replica");
        let live = r.live.as_mut().expect("same incarnation is live");
        live.apply_scheduled = false;
        let Some(task) = live.applying.pop_front() else {
            return Ok(());
        };
        let out = live.sm.apply(&task.entries).map_err(|e| {
            format!(
                "replica {id}: applying [{}, {}] failed: {e}",
                task.entries[0].index,
                task.entries.last().expect("non-empty").index
            )
        })?;
        let mut waiters = task.waiters.into_iter().peekable();
        for res in &out.results {
            while waiters.peek().is_some_and(|w| w.index < res.index) {
                let w = waiters.next().expect("peeked");
                let _ = w.tx.send(Err(Error::Storage("applied earlier".into())));
            }
            if waiters.peek().is_some_and(|w| w.index == res.index) {
                let w = waiters.next().expect("peeked");
                let entry = task
                    .entries
                    .iter()
                    .find(|e| e.index == w.index)
                    .expect("a waiter's entry is in its task");
                if matches!(
                    res.result,
                    CommandResult::Written { .. } | CommandResult::Cas(Ok(()))
                ) {
                    self.checker.record_acknowledged(EntryId::of(entry));
                    self.stats.acknowledged += 1;
                }
                if matches!(res.result, CommandResult::ConfChange(Ok(_))) {
                    self.stats.conf_changes += 1;
                }
                let _ = w.tx.send(Ok(res.result.clone()));
            }
        }
        for w in waiters {
            let _ = w.tx.send(Err(Error::Storage("no result".into())));
        }
        for c in &out.conf_changes {
            if c.index > self.latest_conf.0 {
                let was_joint = !self.latest_conf.1.voters_outgoing.is_empty();
                let joint = !c.conf_state.voters_outgoing.is_empty();
                self.stats.joint_configs += u64::from(joint && !was_joint);
                self.stats.joint_left += u64::from(was_joint && !joint);
                self.latest_conf = (c.index, c.conf_state.clone());
                for m in conf_members(&c.conf_state) {
                    self.joined.entry(m).or_insert(c.index);
                }
            }
        }
        let changes: Vec<_> = out.conf_changes.iter().map(|c| c.change.clone()).collect();
        live.core.on_applied(out.applied_index, &changes);
        if !live.applying.is_empty() {
            live.apply_scheduled = true;
            let incarnation = r.incarnation;
            let delay = self.sched.random_in(100, 3_000);
            self.sched
                .schedule_after(delay, Event::Apply { id, incarnation });
        }
        if !live.sm.has_pending() {
            // The apply wrote sled (write-through, or the held writes
            // reached their bound): a new state a crash can leave.
            push_image(&mut r.images, &live.sm)?;
        }
        // A replica of the outgoing side of a joint configuration is still a
        // member until the configuration is left.
        // Replaying old entries (after a restart that lost its state) passes
        // through configurations from before this replica joined: those are
        // not its removal.
        let removed_self = out
            .conf_changes
            .last()
            .filter(|c| {
                !is_member(&c.conf_state, id) && self.joined.get(&id).is_some_and(|&j| c.index > j)
            })
            .map(|c| (c.index, c.conf_state.clone()));
        for entry in &task.entries {
            if entry.index > out.applied_index {
                break;
            }
            self.checker
                .record_applied(id, EntryId::of(entry))
                .map_err(|v| v.to_string())?;
        }
        if let Some((index, cs)) = removed_self {
            // A removed replica shuts down for good.
            self.trace(|| {
                format!("replica {id} applied its own removal at {index} ({cs:?}); it stops")
            });
            let r = self.replicas.get_mut(&id).expect("replica");
            r.removed = true;
            r.live = None;
        }
        Ok(())
    }

    /// Kill replica `id` like a power loss: unsynced WAL writes are lost
    /// (a random prefix kept, the next one maybe torn), sled comes back at
    /// some batch boundary at or after its last durable flush.
    fn crash(&mut self, id: u64) -> Result<(), String> {
        let r = self.replicas.get_mut(&id).expect("replica");
        let Some(live) = r.live.take() else {
            return Ok(());
        };
        let unsynced = r.fs.unsynced_writes() as u64;
        let keep = self.sched.random_in(0, unsynced);
        let torn = if self.sched.chance(1, 2) {
            self.sched.random_in(0, 64) as usize
        } else {
            0
        };
        r.fs.crash(CrashSpec {
            keep_writes: keep as usize,
            torn_bytes: torn,
        });
        // sled: the flushed image, the newest one, or one in between.
        let choice = self.sched.random_in(0, 2);
        let n = r.images.len() as u64;
        let image = match choice {
            _ if n == 0 => None,
            0 => None,
            1 => r.images.back().cloned(),
            _ => r
                .images
                .get(self.sched.random_in(0, n - 1) as usize)
                .cloned(),
        };
        if let Some(image) = image {
            r.durable_image = image;
        }
        r.images.clear();
        self.stats.elections += live.core.counters().became_leader;
        // Dropping after the crash: the old handles no longer reach the disk.
        drop(live);
        self.stats.crashes += 1;
        self.trace(|| {
            format!("crash {id}: kept {keep} of {unsynced} unsynced writes, torn {torn} bytes, sled image {choice}")
        });
        Ok(())
    }

    /// Views of every replica's durable log: what a crashed replica
    /// recovered (read by reopening its WAL), what a live one persisted.
    fn durable_views(&mut self) -> Result<Vec<ReplicaView>, String> {
        let mut views = Vec::new();
        for r in self.replicas.values() {
            let view = match &r.live {
                Some(live) => {
                    let log = &live.core.raw().raft.raft_log;
                    let persisted = log.persisted.min(log.last_index());
                    let first = log.first_index();
                    let entries = if persisted >= first {
                        log.slice(first, persisted + 1, None)
                            .map_err(err("read log"))?
                    } else {
                        Vec::new()
                    };
                    ReplicaView {
                        id: r.id,
                        snapshot_index: first - 1,
                        snapshot_term: log.term(first - 1).unwrap_or(0),
                        log: entries.iter().map(EntryId::of).collect(),
                        ..ReplicaView::default()
                    }
                }
                None => {
                    let wal = Wal::open_with_fs(Arc::new(r.fs.clone()), wal_dir(), wal_options())
                        .map_err(|e| format!("replica {}: WAL recovery failed: {e}", r.id))?;
                    let (first, last) = (
                        wal.first_index().map_err(err("wal"))?,
                        wal.last_index().map_err(err("wal"))?,
                    );
                    let entries = if last >= first {
                        wal.entries(first, last + 1, None).map_err(err("wal"))?
                    } else {
                        Vec::new()
                    };
                    ReplicaView {
                        id: r.id,
                        snapshot_index: first - 1,
                        snapshot_term: wal.term(first - 1).unwrap_or(0),
                        log: entries.iter().map(EntryId::of).collect(),
                        ..ReplicaView::default()
                    }
                }
            };
            views.push(view);
        }
        Ok(views)
    }

    /// The voters of the newest configuration any replica applied (a
    /// replica that is behind, or down, may know an older one): incoming and
    /// outgoing (empty unless that configuration is joint).
    fn voters(&self) -> (Vec<u64>, Vec<u64>) {
        let cs = &self.latest_conf.1;
        (cs.voters.clone(), cs.voters_outgoing.clone())
    }

    /// Every acknowledged write must be held by so many voters that no
    /// quorum lacks it: otherwise an election could lose it.
    fn check_durability_now(&mut self, when: &str) -> Result<(), String> {
        let views = self.durable_views()?;
        let voters = self.voters();
        self.checker
            .check_no_quorum_lacks(&views, &voters.0, &voters.1)
            .map_err(|v| {
                format!(
                    "durability {when}: {v}; voters {voters:?}; {}",
                    describe(&views)
                )
            })
    }

    /// Invariants over the replicas' current logs (in memory: the stable
    /// part from the WAL plus the unstable tail).
    fn observe(&mut self) -> Result<(), String> {
        let mut views = Vec::new();
        for r in self.replicas.values_mut() {
            let Some(live) = r.live.as_ref() else {
                continue;
            };
            if live.core.counters().snapshot.staged_unrequested > 0 {
                return Err(format!(
                    "replica {}: a snapshot chunk staging result for a chunk never asked for \
                     (snapshot IO results out of order)",
                    r.id
                ));
            }
            let raft = &live.core.raw().raft;
            let log = &raft.raft_log;
            let first = log.first_index();
            let last = log.last_index();
            // Refresh the cached entry ids (`log_cache[i]` is index
            // `cache_first + i`): a log only changes by replacing a suffix
            // or dropping a prefix, so keep the part whose terms still match.
            if r.log_cache.is_empty() || first > r.cache_first + r.log_cache.len() as u64 {
                r.log_cache.clear();
                r.cache_first = first;
            } else if first > r.cache_first {
                r.log_cache.drain(..(first - r.cache_first) as usize);
                r.cache_first = first;
            }
            let mut keep = r
                .log_cache
                .len()
                .min((last + 1).saturating_sub(r.cache_first) as usize);
            while keep > 0 {
                let idx = r.cache_first + keep as u64 - 1;
                if idx < first || log.term(idx).ok() == Some(r.log_cache[keep - 1].term) {
                    break;
                }
                keep -= 1;
            }
            r.log_cache.truncate(keep);
            let cached_last = r.cache_first + keep as u64 - 1;
            if cached_last < last {
                let from = (cached_last + 1).max(first);
                let entries = log
                    .slice(from, last + 1, None)
                    .map_err(|e| format!("replica {}: log unreadable: {e}", r.id))?;
                if r.log_cache.is_empty() {
                    r.cache_first = from;
                }
                r.log_cache.extend(entries.iter().map(EntryId::of));
            }
            let skip = (first.saturating_sub(r.cache_first)) as usize;
            views.push(ReplicaView {
                id: r.id,
                term: raft.term,
                is_leader: raft.state == StateRole::Leader,
                snapshot_index: first - 1,
                snapshot_term: log.term(first - 1).unwrap_or(0),
                log: r.log_cache[skip.min(r.log_cache.len())..].to_vec(),
                committed: log.committed,
                applied: live.core.applied(),
            });
            self.stats.committed = self.stats.committed.max(log.committed);
        }
        self.checker.observe(&views).map_err(|v| v.to_string())
    }

    fn finish(&mut self) -> Result<(), String> {
        // Replicas at the same applied index hold the same data.
        let mut by_applied: BTreeMap<u64, (u64, Image)> = BTreeMap::new();
        for r in self.replicas.values() {
            if let Some(live) = &r.live {
                let applied = live.sm.applied_index();
                let data: Image = live
                    .sm
                    .range::<&[u8], _>(..)
                    .collect::<crate::sm::Result<_>>()
                    .map_err(err("scan"))?;
                if let Some((other, theirs)) = by_applied.get(&applied) {
                    if *theirs != data {
                        return Err(format!(
                            "state machines of replicas {other} and {} differ at applied index {applied}",
                            r.id
                        ));
                    }
                } else {
                    by_applied.insert(applied, (r.id, data));
                }
            }
        }
        // Power loss of every replica at once, then durability against what
        // each one recovers.
        let voters = self.voters();
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        for id in ids {
            self.crash(id)?;
        }
        let views = self.durable_views()?;
        self.checker
            .check_no_quorum_lacks(&views, &voters.0, &voters.1)
            .map_err(|v| {
                format!(
                    "durability after a power loss of every replica: {v}; voters {voters:?}; {}",
                    describe(&views)
                )
            })?;
        // Every replica must come back from what its disks hold.
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        for id in ids {
            let mut r = self.replicas.remove(&id).expect("replica");
            let res = if r.removed {
                Ok(())
            } else {
                self.start(&mut r)
            };
            self.replicas.insert(id, r);
            res.map_err(|e| format!("replica {id} cannot restart after the power loss: {e}"))?;
        }
        // Operations in flight at the power loss have an unknown outcome.
        for c in &mut self.clients {
            match c.pending.take() {
                Some(Pending::Write { op, .. }) => self.history.fail_unknown(op),
                Some(Pending::Read { op, .. }) => self.history.fail_no_effect(op),
                None => {}
            }
        }
        // The cluster must come back and serve what it acknowledged: no
        // more faults, clients go on (their reads after the power loss are
        // checked with everything before it).
        self.calm = true;
        self.isolated.clear();
        self.clogged.clear();
        self.trace(|| "power loss of every replica; all restarted; faults stop".into());
        let ops_before = self.stats.ops_ok;
        for c in 0..self.opts.clients {
            let at = self.sched.random_in(1_000, 20_000);
            self.sched.schedule_after(at, Event::Client(c));
        }
        for _ in 0..RECOVERY_EVENTS {
            if !self.step()? {
                break;
            }
        }
        self.check_liveness(ops_before)?;
        self.stats.ops_after_power_loss = self.stats.ops_ok - ops_before;
        // Operations still in flight have an unknown outcome.
        for c in &mut self.clients {
            match c.pending.take() {
                Some(Pending::Write { op, .. }) => self.history.fail_unknown(op),
                Some(Pending::Read { op, .. }) => self.history.fail_no_effect(op),
                None => {}
            }
        }
        let history = self.history.history();
        match check(&history) {
            CheckResult::Linearizable => Ok(()),
            CheckResult::NotLinearizable(c) => Err(format!("client history {c}")),
            CheckResult::Unknown { key, reason } => {
                tracing::warn!(
                    seed = self.opts.seed,
                    key = %String::from_utf8_lossy(&key),
                    reason,
                    "linearizability check gave up"
                );
                Ok(())
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Close every database before removing their files.
        for r in self.replicas.values_mut() {
            r.live = None;
        }
        let _ = std::fs::remove_dir_all(&self.base_dir);
    }
}

/// A short description of what an envelope carries, for traces.
fn describe_payload(env: &Envelope) -> String {
    match &env.payload {
        Payload::Raft(m) => format!(
            "{:?} term={} idx={} logterm={} commit={} n={} reject={}",
            m.msg_type,
            m.term,
            m.index,
            m.log_term,
            m.commit,
            m.entries.len(),
            m.reject
        ),
        Payload::SnapshotChunk(bytes) => format!("snapshot frame ({} bytes)", bytes.len()),
    }
}

fn propose(core: &mut Core, op: OpId, cmd: &Command, now: Instant) -> Pending {
    let (tx, rx) = oneshot::channel();
    core.propose(cmd.encode(), tx, now);
    let _ = op;
    Pending::Write { op, rx }
}

/// One line per durable view: what each replica holds.
fn describe(views: &[ReplicaView]) -> String {
    views
        .iter()
        .map(|v| {
            let last = v
                .log
                .last()
                .map_or_else(|| "-".to_string(), ToString::to_string);
            format!(
                "replica {} holds ({}@{}, {last}] ({} entries)",
                v.id,
                v.snapshot_index,
                v.snapshot_term,
                v.log.len()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Run one seed.
///
/// # Errors
/// A [`SimFailure`] with the violation, the trace and the replay command.
pub fn run_seed(opts: &SimOptions) -> Result<SeedStats, SimFailure> {
    let fail = |w: Option<&World>, violation: String| SimFailure {
        seed: opts.seed,
        time_us: w.map_or(0, |w| w.sched.now()),
        violation,
        trace: w.map_or_else(Vec::new, |w| {
            w.trace
                .iter()
                .map(|t| format!("t={:>9}us {}", t.time, t.what))
                .collect()
        }),
        replay: replay_command(opts),
    };
    let mut world = World::new(opts).map_err(|v| fail(None, v))?;
    for _ in 0..opts.events {
        match world.step() {
            Ok(true) => {}
            Ok(false) => break,
            Err(v) => return Err(fail(Some(&world), v)),
        }
    }
    if let Err(v) = world.finish() {
        return Err(fail(Some(&world), v));
    }
    Ok(world.stats.clone())
}
