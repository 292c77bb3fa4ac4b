//! Notifications handed from committing transactions to a per-database sender.
//!
//! Postgres serialises every transaction that sends a NOTIFY: it holds one cluster-wide lock from
//! the moment the notifications are queued until the commit has ended. A busy captured table would
//! make its writers wait for each other there. Instead, a transaction reserves its notices in a
//! queue of its database before it commits, marks them ready once it has committed (or cancels
//! them if it aborts), and the database's sender delivers them in reservation order, in batches,
//! from its own transactions. A notice is sent only after its transaction committed, as NOTIFY
//! itself guarantees: a notice still reserved is resolved by its transaction id (still running:
//! wait; committed: send; aborted: drop), as Postgres reads its own NOTIFY queue. A prepared
//! transaction's notice is the exception: it may wait for `COMMIT PREPARED` for hours, so it is
//! passed over while undecided, and the notices behind it go.
//!
//! The layout is plain old data, meant to live in shared memory; every method expects the caller
//! to hold the lock that guards it.

pub const DATABASES: usize = 8;
pub const SLOTS: usize = 512;
/// Channel names are identifiers: at most NAMEDATALEN - 1 bytes.
pub const CHANNEL_BYTES: usize = 64;
/// A capture payload is about 150 bytes; a longer one is sent by its own transaction.
pub const PAYLOAD_BYTES: usize = 448;
/// A sender that was asked for but never started may be asked for again after this time.
pub const STALE_START_US: i64 = 10_000_000;
/// After a sender left notices behind (it failed, or was terminated), the next one is started
/// no sooner than this: a sender that fails at once (the NOTIFY queue full of notifications a
/// stalled listener never reads) must not be started again on every commit.
pub const RESTART_DELAY_US: i64 = 1_000_000;

const FREE: u32 = 0;
const RESERVED: u32 = 1;
const READY: u32 = 2;
const CANCELLED: u32 = 3;
/// Reserved by a transaction that was then prepared: decided by `COMMIT PREPARED` or `ROLLBACK
/// PREPARED`, which may come much later, so it holds no other notice back.
const PREPARED: u32 = 4;

const IDLE: u32 = 0;
const STARTING: u32 = 1;
const RUNNING: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
struct Slot {
    state: u32,
    channel_len: u32,
    payload_len: u32,
    /// The reserving transaction's top-level id.
    xid: u32,
    channel: [u8; CHANNEL_BYTES],
    payload: [u8; PAYLOAD_BYTES],
}

/// One database's queue, and its sender.
#[repr(C)]
struct Queue {
    database: u32,
    sender: u32,
    pid: i32,
    /// Where to wake the sender: the address of its latch, the same in every process.
    latch: usize,
    /// 1 while the sender sleeps on its latch: only then does a commit wake it. Setting another
    /// process's latch costs a signal (a system call) whenever that process may be waiting, and a
    /// busy sender that only pauses between looks must not cost every commit one.
    sleeping: u32,
    /// When `sender` last changed.
    since: i64,
    /// The first notice not yet delivered, and the next to reserve. They only grow, also when the
    /// queue passes to another database, so that a late ticket of the old one points below `head`.
    /// Between them, a slot already sent (behind an undecided prepared one) is `FREE`.
    head: u64,
    tail: u64,
    slots: [Slot; SLOTS],
}

#[repr(C)]
pub struct NoticeQueues {
    queues: [Queue; DATABASES],
}

/// A reserved notice: which queue, and where in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    database: u32,
    queue: usize,
    position: u64,
}

/// A notice as the sender delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub channel: String,
    pub payload: String,
}

/// The slots a batch of `ready` resolved (sent, dropped or cancelled), for `delivered`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved(Vec<u64>);

impl Resolved {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A database's queue as an operator sees it (`cep.notification_queue()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Notices of committed (or committing) transactions not yet sent.
    pub queued: u64,
    /// Notices of prepared transactions still undecided.
    pub prepared: u64,
    pub sender_running: bool,
}

/// What became of a transaction, for a notice still marked reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Running,
    Committed,
    Aborted,
}

/// Why a notice was not queued: the transaction then sends it itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The database has no running sender (the caller may start one: see `start`).
    NoSender,
    Full,
    TooLong,
}

impl NoticeQueues {
    /// Sets up zeroed memory: every queue idle and empty.
    pub fn init(&mut self) {
        for q in self.queues.iter_mut() {
            (q.database, q.sender, q.pid, q.latch, q.since, q.head, q.tail, q.sleeping) = (0, IDLE, 0, 0, 0, 0, 0, 0);
            for s in q.slots.iter_mut() {
                s.state = FREE;
            }
        }
    }

    fn find(&self, database: u32) -> Option<usize> {
        self.queues.iter().position(|q| q.database == database)
    }

    /// Queues a notice for the database's sender, before the transaction commits.
    pub fn reserve(&mut self, database: u32, xid: u32, channel: &str, payload: &str) -> Result<Ticket, Refused> {
        if channel.len() >= CHANNEL_BYTES || payload.len() > PAYLOAD_BYTES {
            return Err(Refused::TooLong);
        }
        let index = self.find(database).ok_or(Refused::NoSender)?;
        let q = &mut self.queues[index];
        if q.sender != RUNNING {
            return Err(Refused::NoSender);
        }
        if q.tail - q.head >= SLOTS as u64 {
            return Err(Refused::Full);
        }
        let position = q.tail;
        let s = &mut q.slots[(position % SLOTS as u64) as usize];
        s.state = RESERVED;
        s.xid = xid;
        s.channel[..channel.len()].copy_from_slice(channel.as_bytes());
        s.channel_len = channel.len() as u32;
        s.payload[..payload.len()].copy_from_slice(payload.as_bytes());
        s.payload_len = payload.len() as u32;
        q.tail += 1;
        Ok(Ticket { database, queue: index, position })
    }

    /// Queues a notice of a transaction being prepared: it may not NOTIFY, so its notice waits in
    /// the queue, reserved, until COMMIT PREPARED or ROLLBACK PREPARED decides it (see `ready`),
    /// whether or not a sender runs yet (the caller starts one when `start` says so). A
    /// transaction's notices must be reserved under one hold of the lock, next to each other: the
    /// sender keeps their order only then (it moves them about while they wait).
    pub fn reserve_prepared(&mut self, database: u32, xid: u32, channel: &str, payload: &str, now: i64) -> Result<(Ticket, bool), Refused> {
        // Refused before a sender is asked for: the caller tries a shorter form next, and that
        // call must be the one told to start the sender.
        if channel.len() >= CHANNEL_BYTES || payload.len() > PAYLOAD_BYTES {
            return Err(Refused::TooLong);
        }
        let start = self.start(database, now);
        let index = self.find(database).ok_or(Refused::Full)?;
        let running = std::mem::replace(&mut self.queues[index].sender, RUNNING);
        let reserved = self.reserve(database, xid, channel, payload);
        self.queues[index].sender = running;
        if let Ok(t) = reserved {
            if let Some(s) = self.slot(t) {
                s.state = PREPARED;
            }
        }
        if reserved.is_err() && start {
            // Refused (full): the caller will not start the sender this call asked for.
            self.failed(database);
        }
        reserved.map(|t| (t, start))
    }

    fn slot(&mut self, t: Ticket) -> Option<&mut Slot> {
        let q = &mut self.queues[t.queue];
        (q.database == t.database && t.position >= q.head && t.position < q.tail).then(|| &mut q.slots[(t.position % SLOTS as u64) as usize])
    }

    /// The transaction committed: the notice may go. Returns the latch to set (outside the lock),
    /// if the sender is running.
    pub fn publish(&mut self, t: Ticket) -> Option<usize> {
        if let Some(s) = self.slot(t).filter(|s| s.state == RESERVED) {
            s.state = READY;
        }
        let q = &mut self.queues[t.queue];
        let wake = q.database == t.database && q.sender == RUNNING && q.latch != 0 && q.sleeping == 1;
        if wake {
            // One wake-up is enough: the sender reads everything ready when it wakes.
            q.sleeping = 0;
        }
        wake.then_some(q.latch)
    }

    /// The latch of the database's running sender, to wake it for other work than notices.
    pub fn latch_of(&self, database: u32) -> Option<usize> {
        let q = &self.queues[self.find(database)?];
        (q.sender == RUNNING && q.latch != 0).then_some(q.latch)
    }

    /// The sender is about to sleep on its latch (`true`), or has woken (`false`). It must look
    /// for ready notices once more after saying it sleeps: one published just before was not
    /// told to wake it.
    pub fn sleeping(&mut self, database: u32, sleeping: bool) {
        if let Some(index) = self.find(database) {
            self.queues[index].sleeping = sleeping as u32;
        }
    }

    /// The transaction aborted: the notice never goes.
    pub fn cancel(&mut self, t: Ticket) {
        if let Some(s) = self.slot(t).filter(|s| s.state == RESERVED) {
            s.state = CANCELLED;
        }
    }

    /// For the database's sender: the notices ready from the head of its queue, in order, up to
    /// `max`, and the slots they resolve (cancelled and aborted ones included). They stay queued
    /// until `delivered` is called with those, so a sender that fails leaves them to the next.
    /// A notice still reserved is looked up with `outcome`, and stops the read while its
    /// transaction runs (it is committing: it reserved in its last step before). A prepared
    /// transaction's undecided notice is passed over instead.
    pub fn ready(&self, database: u32, max: usize, out: &mut Vec<Notice>, outcome: impl Fn(u32) -> Outcome) -> Resolved {
        out.clear();
        let mut resolved = Resolved::default();
        let Some(index) = self.find(database) else { return resolved };
        let q = &self.queues[index];
        // A prepared transaction's notices are decided once per call: COMMIT PREPARED ending
        // between two of them must not send the second before the first.
        let mut decided: Vec<(u32, Outcome)> = Vec::new();
        let mut outcome_of = |xid: u32| match decided.iter().find(|(x, _)| *x == xid) {
            Some(&(_, o)) => o,
            None => {
                let o = outcome(xid);
                decided.push((xid, o));
                o
            }
        };
        for position in q.head..q.tail {
            if out.len() >= max {
                break;
            }
            let s = &q.slots[(position % SLOTS as u64) as usize];
            let send = match s.state {
                FREE => continue,
                READY => true,
                RESERVED | PREPARED => match outcome_of(s.xid) {
                    Outcome::Running if s.state == PREPARED => continue,
                    Outcome::Running => break,
                    Outcome::Committed => true,
                    Outcome::Aborted => false,
                },
                _ => false,
            };
            if send {
                out.push(Notice {
                    channel: String::from_utf8_lossy(&s.channel[..s.channel_len as usize]).into_owned(),
                    payload: String::from_utf8_lossy(&s.payload[..s.payload_len as usize]).into_owned(),
                });
            }
            resolved.0.push(position);
        }
        resolved
    }

    /// The slots of a batch of `ready` were delivered: freed, and the head moved past every
    /// freed slot in front. A prepared transaction's notice found at the head moves to the tail
    /// (no ticket points at it any more), so that one undecided for hours does not use the ring
    /// up behind it; the notices of one transaction keep their order.
    pub fn delivered(&mut self, database: u32, resolved: &Resolved) {
        let Some(index) = self.find(database) else { return };
        let q = &mut self.queues[index];
        for &position in &resolved.0 {
            if position >= q.head && position < q.tail {
                q.slots[(position % SLOTS as u64) as usize].state = FREE;
            }
        }
        // Each slot in use is looked at once at most: prepared ones alone are not turned round
        // and round.
        for _ in q.head..q.tail {
            let head = (q.head % SLOTS as u64) as usize;
            match q.slots[head].state {
                FREE => q.head += 1,
                PREPARED => {
                    // The tail's slot is free (it lies behind the head), or is this one when
                    // the ring is full.
                    let tail = (q.tail % SLOTS as u64) as usize;
                    q.slots[tail] = q.slots[head];
                    if tail != head {
                        q.slots[head].state = FREE;
                    }
                    q.head += 1;
                    q.tail += 1;
                }
                _ => break,
            }
        }
    }

    /// A transaction found no sender: whether it should start one (then it must call `attach`
    /// from the sender, or `failed` if the start failed). At most one sender per database is
    /// asked for at a time; a queue is given to a new database only when idle and empty.
    pub fn start(&mut self, database: u32, now: i64) -> bool {
        let index = match self.find(database) {
            Some(i) => i,
            // A queue whose sender never came (its database was dropped meanwhile) is free too.
            None => match self.queues.iter().position(|q| {
                q.database == 0 || ((q.sender == IDLE || (q.sender == STARTING && now - q.since >= STALE_START_US)) && q.head == q.tail)
            }) {
                Some(i) => {
                    self.queues[i].database = database;
                    i
                }
                None => return false,
            },
        };
        let q = &mut self.queues[index];
        let stale = now - q.since >= STALE_START_US;
        let left_work = q.sender == IDLE && q.head != q.tail && now - q.since < RESTART_DELAY_US;
        if q.sender == RUNNING || (q.sender == STARTING && !stale) || left_work {
            return false;
        }
        (q.sender, q.pid, q.latch, q.since) = (STARTING, 0, 0, now);
        true
    }

    /// The sender could not be started.
    pub fn failed(&mut self, database: u32) {
        if let Some(q) = self.find(database).map(|i| &mut self.queues[i]) {
            if q.sender == STARTING {
                q.sender = IDLE;
            }
        }
    }

    /// A sender starts serving the database; false if another one already does.
    pub fn attach(&mut self, database: u32, pid: i32, latch: usize, now: i64) -> bool {
        let Some(index) = self.find(database) else { return false };
        let q = &mut self.queues[index];
        if q.sender == RUNNING && q.pid != pid {
            return false;
        }
        (q.sender, q.pid, q.latch, q.since, q.sleeping) = (RUNNING, pid, latch, now, 0);
        true
    }

    /// The sender stops. Unless `anyway` (it is exiting), only when nothing is queued, so that no
    /// committed notice is left without a sender; returns whether it stopped.
    pub fn detach(&mut self, database: u32, pid: i32, anyway: bool, now: i64) -> bool {
        let Some(index) = self.find(database) else { return true };
        let q = &mut self.queues[index];
        if q.pid != pid || q.sender != RUNNING {
            return true;
        }
        if !anyway && q.head != q.tail {
            return false;
        }
        (q.sender, q.pid, q.latch, q.since, q.sleeping) = (IDLE, 0, 0, now, 0);
        true
    }

    /// Databases with notices waiting and no sender, nor one on its way: their sender failed or
    /// was stopped with work left. A supervisor starts one (`start`), or, if the database is
    /// gone, `reclaim`s the queue.
    pub fn orphaned(&self, now: i64) -> Vec<u32> {
        self.queues
            .iter()
            .filter(|q| q.database != 0 && q.head != q.tail)
            .filter(|q| match q.sender {
                IDLE => now - q.since >= RESTART_DELAY_US,
                STARTING => now - q.since >= STALE_START_US,
                _ => false,
            })
            .map(|q| q.database)
            .collect()
    }

    /// The database was dropped: its queue is emptied and free for another.
    pub fn reclaim(&mut self, database: u32) {
        let Some(index) = self.find(database) else { return };
        let q = &mut self.queues[index];
        if q.sender == RUNNING {
            return;
        }
        for position in q.head..q.tail {
            q.slots[(position % SLOTS as u64) as usize].state = FREE;
        }
        (q.head, q.database, q.sender) = (q.tail, 0, IDLE);
    }

    /// The database's queue: notices to send, notices of undecided prepared transactions, and
    /// whether a sender serves it.
    pub fn status(&self, database: u32, outcome: impl Fn(u32) -> Outcome) -> Status {
        let Some(index) = self.find(database) else { return Status::default() };
        let q = &self.queues[index];
        let mut status = Status { sender_running: q.sender == RUNNING, ..Status::default() };
        for position in q.head..q.tail {
            let s = &q.slots[(position % SLOTS as u64) as usize];
            match s.state {
                READY | RESERVED => status.queued += 1,
                PREPARED => match outcome(s.xid) {
                    Outcome::Running => status.prepared += 1,
                    Outcome::Committed => status.queued += 1,
                    Outcome::Aborted => {}
                },
                _ => {}
            }
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues() -> Box<NoticeQueues> {
        // Straight on the heap: at 2 MB, a value built on the stack overflows a test thread's.
        let layout = std::alloc::Layout::new::<NoticeQueues>();
        // SAFETY: all-zero bytes are a valid NoticeQueues (integers and byte arrays), allocated
        // with the layout Box frees it with.
        let mut q: Box<NoticeQueues> = unsafe { Box::from_raw(std::alloc::alloc_zeroed(layout) as *mut NoticeQueues) };
        q.init();
        q
    }

    fn running(db: u32) -> Box<NoticeQueues> {
        let mut q = queues();
        assert!(q.start(db, 0));
        assert!(q.attach(db, 42, 0x1000, 0));
        q
    }

    /// Every transaction still running.
    fn running_xacts(_: u32) -> Outcome {
        Outcome::Running
    }

    fn payloads(q: &NoticeQueues, db: u32) -> (Vec<String>, Resolved) {
        let mut out = Vec::new();
        let n = q.ready(db, 100, &mut out, running_xacts);
        (out.into_iter().map(|n| n.payload).collect(), n)
    }

    fn status(q: &NoticeQueues, db: u32) -> (u64, bool) {
        let s = q.status(db, running_xacts);
        (s.queued + s.prepared, s.sender_running)
    }

    #[test]
    fn notices_go_after_commit_in_reservation_order_and_aborted_ones_never() {
        let mut q = running(7);
        let a = q.reserve(7, 100, "graph", "a").unwrap();
        let b = q.reserve(7, 101, "graph", "b").unwrap();
        let c = q.reserve(7, 102, "graph", "c").unwrap();
        // Nothing is ready before its transaction commits; b commits first but a blocks the head.
        // The sender sleeps: the first commit wakes it, the next ones need not.
        q.sleeping(7, true);
        assert_eq!(q.publish(b), Some(0x1000));
        assert_eq!(payloads(&q, 7), (vec![], Resolved::default()));
        q.cancel(a);
        assert_eq!(q.publish(c), None, "already woken");
        let (sent, span) = payloads(&q, 7);
        assert_eq!(sent, vec!["b", "c"]);
        assert_eq!(span.len(), 3);
        q.delivered(7, &span);
        assert_eq!(status(&q, 7), (0, true));
        // A late publish of a delivered ticket changes nothing.
        q.publish(a);
        assert_eq!(payloads(&q, 7), (vec![], Resolved::default()));
    }

    #[test]
    fn a_notice_still_reserved_goes_by_what_its_transaction_became() {
        let mut q = running(7);
        q.reserve(7, 100, "graph", "committed, not yet published").unwrap();
        q.reserve(7, 101, "graph", "aborted").unwrap();
        q.reserve(7, 102, "graph", "running").unwrap();
        let t = q.reserve(7, 103, "graph", "behind").unwrap();
        q.publish(t);
        let outcome = |xid| match xid {
            100 => Outcome::Committed,
            101 => Outcome::Aborted,
            _ => Outcome::Running,
        };
        let mut out = Vec::new();
        let span = q.ready(7, 10, &mut out, outcome);
        assert_eq!(out.iter().map(|n| n.payload.as_str()).collect::<Vec<_>>(), ["committed, not yet published"]);
        assert_eq!(span.len(), 2, "stops at the running one, which may still commit");
        q.delivered(7, &span);
        let span = q.ready(7, 10, &mut out, |_| Outcome::Committed);
        assert_eq!(out.iter().map(|n| n.payload.as_str()).collect::<Vec<_>>(), ["running", "behind"]);
        assert_eq!(span.len(), 2);
    }

    #[test]
    fn a_prepared_transactions_notice_waits_reserved_with_or_without_a_sender() {
        // No sender yet: the queue is allotted, a sender asked for, and the notice kept.
        let mut q = queues();
        let (_, start) = q.reserve_prepared(7, 100, "alerts", "prepared", 0).unwrap();
        assert!(start, "the caller starts the sender");
        assert!(q.attach(7, 42, 0x1000, 0));
        // While the prepared transaction is undecided the notice holds; COMMIT PREPARED sends it.
        let mut out = Vec::new();
        assert!(q.ready(7, 10, &mut out, running_xacts).is_empty());
        let span = q.ready(7, 10, &mut out, |_| Outcome::Committed);
        assert_eq!((out.len(), span.len()), (1, 1));
        q.delivered(7, &span);
        // With a sender running, none is asked for; ROLLBACK PREPARED drops the notice.
        let (_, start) = q.reserve_prepared(7, 101, "alerts", "rolled back", 0).unwrap();
        assert!(!start);
        let span = q.ready(7, 10, &mut out, |_| Outcome::Aborted);
        assert_eq!((out.len(), span.len()), (0, 1));
        assert_eq!(q.reserve_prepared(7, 102, "alerts", &"x".repeat(PAYLOAD_BYTES + 1), 0).unwrap_err(), Refused::TooLong);
    }

    /// A notice too long for a slot, then its short form: the short one's call starts the sender
    /// (it was asked for by the refused call, and never started).
    #[test]
    fn a_prepared_notices_short_form_still_starts_the_sender() {
        let mut q = queues();
        assert_eq!(q.reserve_prepared(7, 100, "alerts", &"x".repeat(PAYLOAD_BYTES + 1), 0).unwrap_err(), Refused::TooLong);
        let (_, start) = q.reserve_prepared(7, 100, "alerts", "short", 0).unwrap();
        assert!(start, "the caller starts the sender");
    }

    /// A full queue refuses a prepared notice after asking for a sender: the ask is withdrawn, so a
    /// transaction may start one after the usual restart delay, not only once the ask goes stale.
    #[test]
    fn a_full_queue_leaves_no_sender_asked_for_and_never_started() {
        let mut q = queues();
        for xid in 0..SLOTS as u32 {
            q.reserve_prepared(7, xid, "alerts", "p", 0).unwrap();
        }
        q.failed(7);
        let later = RESTART_DELAY_US.max(STALE_START_US);
        assert_eq!(q.reserve_prepared(7, 9999, "alerts", "p", later).unwrap_err(), Refused::Full);
        assert!(q.start(7, later + RESTART_DELAY_US), "a sender may be started");
    }

    #[test]
    fn undelivered_notices_stay_for_the_next_sender() {
        let mut q = running(7);
        let t = q.reserve(7, 100, "graph", "x").unwrap();
        q.publish(t);
        let (sent, _) = payloads(&q, 7);
        assert_eq!(sent, vec!["x"]);
        // The sender died before it delivered: the notice waits, and no one else takes the queue.
        assert!(q.detach(7, 42, true, 5));
        assert_eq!(q.reserve(7, 101, "graph", "y"), Err(Refused::NoSender));
        assert_eq!(status(&q, 7), (1, false));
        assert!(!q.start(7, 6), "not at once after a sender left work behind");
        assert!(q.orphaned(6).is_empty());
        assert_eq!(q.orphaned(5 + RESTART_DELAY_US), vec![7], "the supervisor sees it");
        assert!(q.start(7, 5 + RESTART_DELAY_US));
        assert!(q.orphaned(6 + RESTART_DELAY_US).is_empty(), "a sender is on its way");
        assert!(q.attach(7, 43, 0x2000, 6));
        assert_eq!(payloads(&q, 7).0, vec!["x"]);
    }

    #[test]
    fn a_dropped_databases_queue_is_reclaimed_and_late_tickets_touch_nothing() {
        let mut q = running(7);
        let late = q.reserve(7, 100, "graph", "x").unwrap();
        assert!(q.detach(7, 42, true, 0));
        q.reclaim(7);
        assert_eq!(status(&q, 7), (0, false));
        // The queue goes to another database; the old ticket must not touch its notices.
        for db in 20..20 + DATABASES as u32 {
            assert!(q.start(db, 0), "{db}");
        }
        assert!(q.attach(27, 50, 0x3000, 0));
        let fresh = q.reserve(27, 200, "other", "y").unwrap();
        assert_eq!(q.publish(late), None);
        q.cancel(late);
        q.publish(fresh);
        let mut out = Vec::new();
        q.ready(27, 10, &mut out, running_xacts);
        assert_eq!(out, vec![Notice { channel: "other".into(), payload: "y".into() }]);
    }

    #[test]
    fn a_sender_with_work_queued_does_not_stop() {
        let mut q = running(7);
        let t = q.reserve(7, 100, "graph", "x").unwrap();
        assert!(!q.detach(7, 42, false, 1));
        q.publish(t);
        let (_, span) = payloads(&q, 7);
        q.delivered(7, &span);
        assert!(q.detach(7, 42, false, 1));
        assert_eq!(status(&q, 7), (0, false));
    }

    #[test]
    fn refusals_full_too_long_and_no_sender() {
        let mut q = queues();
        assert_eq!(q.reserve(7, 100, "graph", "x"), Err(Refused::NoSender));
        assert!(q.start(7, 0));
        assert!(!q.start(7, 1), "one start at a time");
        assert_eq!(q.reserve(7, 100, "graph", "x"), Err(Refused::NoSender), "starting is not running");
        assert!(q.start(7, STALE_START_US), "a start that never came is asked again");
        assert!(q.attach(7, 1, 0x10, 0));
        assert!(!q.attach(7, 2, 0x20, 0), "one sender per database");
        assert_eq!(q.reserve(7, 100, &"c".repeat(CHANNEL_BYTES), "x"), Err(Refused::TooLong));
        assert_eq!(q.reserve(7, 100, "graph", &"p".repeat(PAYLOAD_BYTES + 1)), Err(Refused::TooLong));
        for _ in 0..SLOTS {
            q.reserve(7, 100, "graph", "x").unwrap();
        }
        assert_eq!(q.reserve(7, 100, "graph", "x"), Err(Refused::Full));
    }

    #[test]
    fn databases_have_their_own_queues_and_wrap_around() {
        let mut q = running(7);
        assert!(q.start(9, 0));
        assert!(q.attach(9, 50, 0x3000, 0));
        for round in 0..3 * SLOTS {
            let a = q.reserve(7, 100, "c7", &format!("{round}")).unwrap();
            let b = q.reserve(9, 100, "c9", &format!("{round}")).unwrap();
            // Database 9's sender sleeps, 7's is busy: only 9's is woken.
            q.sleeping(9, true);
            assert_eq!(q.publish(b), Some(0x3000));
            assert_eq!(q.publish(a), None);
            let mut out = Vec::new();
            let n = q.ready(7, 10, &mut out, running_xacts);
            assert_eq!(out, vec![Notice { channel: "c7".into(), payload: format!("{round}") }]);
            q.delivered(7, &n);
            let n = q.ready(9, 10, &mut out, running_xacts);
            assert_eq!(out[0].channel, "c9");
            q.delivered(9, &n);
        }
        // Every queue in use, and busy: a ninth database gets none and sends its own.
        for db in 10..10 + DATABASES as u32 - 2 {
            assert!(q.start(db, 0));
        }
        assert!(!q.start(100, 0));
        // An idle, empty queue goes to a new database.
        q.failed(10);
        assert!(q.start(100, 0));
    }

    /// A prepared transaction may stay undecided for hours: the notices committed after it must
    /// not wait for it, nor use the ring up behind it; it goes once COMMIT PREPARED has committed.
    #[test]
    fn an_undecided_prepared_notice_holds_back_no_other() {
        let mut q = running(7);
        q.reserve_prepared(7, 100, "alerts", "prepared 1", 0).unwrap();
        q.reserve_prepared(7, 100, "alerts", "prepared 2", 0).unwrap();
        let t = q.reserve(7, 101, "alerts", "committed after").unwrap();
        q.publish(t);
        let prepared_runs = |xid| if xid == 100 { Outcome::Running } else { Outcome::Committed };
        assert_eq!(q.status(7, prepared_runs), Status { queued: 1, prepared: 2, sender_running: true });
        let mut out = Vec::new();
        let span = q.ready(7, 10, &mut out, prepared_runs);
        assert_eq!(out.iter().map(|n| n.payload.as_str()).collect::<Vec<_>>(), ["committed after"]);
        q.delivered(7, &span);
        assert_eq!(q.status(7, prepared_runs), Status { queued: 0, prepared: 2, sender_running: true });
        assert!(q.ready(7, 10, &mut out, prepared_runs).is_empty(), "a sent notice is not sent again");
        assert!(!q.detach(7, 42, false, 1), "the sender stays for the prepared ones");
        // Many more pass them, round the ring several times: never full.
        for xid in 200..200 + 3 * SLOTS as u32 {
            let t = q.reserve(7, xid, "alerts", "x").unwrap();
            q.publish(t);
            let span = q.ready(7, 10, &mut out, prepared_runs);
            assert_eq!(out.len(), 1);
            q.delivered(7, &span);
        }
        assert_eq!(q.queues[0].tail - q.queues[0].head, 2, "only the prepared ones are in use");
        // COMMIT PREPARED: they go, in their order, and the queue is empty again.
        let span = q.ready(7, 10, &mut out, |_| Outcome::Committed);
        assert_eq!(out.iter().map(|n| n.payload.as_str()).collect::<Vec<_>>(), ["prepared 1", "prepared 2"]);
        q.delivered(7, &span);
        assert_eq!(q.status(7, prepared_runs), Status { queued: 0, prepared: 0, sender_running: true });
        assert!(q.detach(7, 42, false, 2));
    }

    /// A ring full of undecided prepared notices turns none of them over, and ROLLBACK PREPARED
    /// drops them all.
    #[test]
    fn a_ring_full_of_prepared_notices_waits_and_rolls_back() {
        let mut q = running(7);
        for _ in 0..SLOTS {
            q.reserve_prepared(7, 100, "alerts", "p", 0).unwrap();
        }
        assert_eq!(q.reserve(7, 101, "alerts", "x"), Err(Refused::Full));
        let mut out = Vec::new();
        let span = q.ready(7, 10, &mut out, running_xacts);
        assert!(span.is_empty());
        q.delivered(7, &span);
        assert_eq!(q.status(7, running_xacts).prepared, SLOTS as u64);
        let span = q.ready(7, SLOTS, &mut out, |_| Outcome::Aborted);
        assert_eq!((out.len(), span.len()), (0, SLOTS));
        q.delivered(7, &span);
        assert_eq!(q.status(7, running_xacts), Status { queued: 0, prepared: 0, sender_running: true });
        assert!(q.reserve(7, 300, "alerts", "x").is_ok());
    }

    /// COMMIT PREPARED may end while the sender reads the queue: the transaction's second notice
    /// must not go before its first, found undecided a moment earlier.
    #[test]
    fn a_prepared_transactions_notices_are_decided_once_per_read() {
        let mut q = running(7);
        q.reserve_prepared(7, 100, "alerts", "p1", 0).unwrap();
        q.reserve_prepared(7, 100, "alerts", "p2", 0).unwrap();
        let asked = std::cell::Cell::new(0);
        let commits_meanwhile = |_| {
            asked.set(asked.get() + 1);
            if asked.get() == 1 {
                Outcome::Running
            } else {
                Outcome::Committed
            }
        };
        let mut out = Vec::new();
        assert!(q.ready(7, 10, &mut out, commits_meanwhile).is_empty());
        assert_eq!(asked.get(), 1, "asked once for the transaction");
        let span = q.ready(7, 10, &mut out, |_| Outcome::Committed);
        assert_eq!(out.iter().map(|n| n.payload.as_str()).collect::<Vec<_>>(), ["p1", "p2"]);
        q.delivered(7, &span);
    }
}
