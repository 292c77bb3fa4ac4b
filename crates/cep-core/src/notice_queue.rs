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
//! transaction's notices are not queued here (they must outlive a restart, as the transaction
//! does: the pgrx layer keeps them in a table); the queue only tells the sender to look there once
//! `COMMIT PREPARED` has committed one (`prepared_committed`).
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
    /// 1 when `COMMIT PREPARED` committed a transaction since the sender last looked: its
    /// notices wait outside the queue, for the sender to send.
    prepared_committed: u32,
    /// The first notice not yet delivered, and the next to reserve. They only grow, also when the
    /// queue passes to another database, so that a late ticket of the old one points below `head`.
    head: u64,
    tail: u64,
    slots: [Slot; SLOTS],
}

impl Queue {
    /// Notices to send, in the queue or (committed by `COMMIT PREPARED`) outside it.
    fn has_work(&self) -> bool {
        self.head != self.tail || self.prepared_committed != 0
    }
}

#[repr(C)]
pub struct NoticeQueues {
    queues: [Queue; DATABASES],
    /// When this memory was set up (the server started, or restarted after a crash): what it
    /// knew of earlier prepared transactions is gone.
    pub started: i64,
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
    pub sender_running: bool,
}

/// What `COMMIT PREPARED` must do so that the sender looks for the transaction's notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Set this latch: the sender runs.
    Latch(usize),
    /// Start a sender (then `attach` or `failed`, as after `start`).
    Start,
    /// Nothing now: a sender is on its way, or no queue is free; the next sender of the
    /// database looks when it starts.
    Later,
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
    pub fn init(&mut self, now: i64) {
        self.started = now;
        for q in self.queues.iter_mut() {
            (q.database, q.sender, q.pid, q.latch, q.since, q.head, q.tail, q.sleeping, q.prepared_committed) = (0, IDLE, 0, 0, 0, 0, 0, 0, 0);
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
    /// transaction runs (it is committing: it reserved in its last step before).
    pub fn ready(&self, database: u32, max: usize, out: &mut Vec<Notice>, outcome: impl Fn(u32) -> Outcome) -> Resolved {
        out.clear();
        let mut resolved = Resolved::default();
        let Some(index) = self.find(database) else { return resolved };
        let q = &self.queues[index];
        for position in q.head..q.tail {
            if out.len() >= max {
                break;
            }
            let s = &q.slots[(position % SLOTS as u64) as usize];
            let send = match s.state {
                READY => true,
                RESERVED => match outcome(s.xid) {
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
    /// freed slot in front.
    pub fn delivered(&mut self, database: u32, resolved: &Resolved) {
        let Some(index) = self.find(database) else { return };
        let q = &mut self.queues[index];
        for &position in &resolved.0 {
            if position >= q.head && position < q.tail {
                q.slots[(position % SLOTS as u64) as usize].state = FREE;
            }
        }
        while q.head < q.tail && q.slots[(q.head % SLOTS as u64) as usize].state == FREE {
            q.head += 1;
        }
    }

    /// `COMMIT PREPARED` committed a transaction whose notices may wait for the sender: it must
    /// look for them. Asks for a sender when none runs.
    pub fn prepared_committed(&mut self, database: u32, now: i64) -> Wake {
        let start = self.latch_of(database).is_none() && self.start(database, now);
        let Some(index) = self.find(database) else { return Wake::Later };
        let q = &mut self.queues[index];
        q.prepared_committed = 1;
        match (start, q.sender == RUNNING && q.latch != 0) {
            (true, _) => Wake::Start,
            (false, true) => Wake::Latch(q.latch),
            (false, false) => Wake::Later,
        }
    }

    /// For the sender: whether `COMMIT PREPARED` asked it to look since it last asked.
    pub fn take_prepared_committed(&mut self, database: u32) -> bool {
        self.find(database).is_some_and(|index| std::mem::take(&mut self.queues[index].prepared_committed) == 1)
    }

    /// A transaction found no sender: whether it should start one (then it must call `attach`
    /// from the sender, or `failed` if the start failed). At most one sender per database is
    /// asked for at a time; a queue is given to a new database only when idle and empty.
    pub fn start(&mut self, database: u32, now: i64) -> bool {
        let index =
            match self.find(database) {
                Some(i) => i,
                // A queue whose sender never came (its database was dropped meanwhile) is free too.
                None => match self.queues.iter().position(|q| {
                    q.database == 0 || ((q.sender == IDLE || (q.sender == STARTING && now - q.since >= STALE_START_US)) && !q.has_work())
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
        let left_work = q.sender == IDLE && q.has_work() && now - q.since < RESTART_DELAY_US;
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
        if !anyway && q.has_work() {
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
            .filter(|q| q.database != 0 && q.has_work())
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
        (q.head, q.database, q.sender, q.prepared_committed) = (q.tail, 0, IDLE, 0);
    }

    /// The database's queue: notices to send, and whether a sender serves it.
    pub fn status(&self, database: u32) -> Status {
        let Some(index) = self.find(database) else { return Status::default() };
        let q = &self.queues[index];
        let queued = (q.head..q.tail).filter(|p| matches!(q.slots[(p % SLOTS as u64) as usize].state, READY | RESERVED)).count();
        Status { queued: queued as u64, sender_running: q.sender == RUNNING }
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
        q.init(0);
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
        let s = q.status(db);
        (s.queued, s.sender_running)
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

    /// COMMIT PREPARED wakes a running sender, or asks for one; the sender, told once, looks in
    /// the table once. Until it has, its queue counts as busy: the sender does not leave, a
    /// sender that failed is replaced, and the queue is not given to another database.
    #[test]
    fn commit_prepared_wakes_or_starts_the_sender_which_looks_once() {
        let mut q = running(7);
        assert_eq!(q.prepared_committed(7, 0), Wake::Latch(0x1000));
        assert!(!q.detach(7, 42, false, 1), "the sender stays until it has looked");
        assert!(q.take_prepared_committed(7));
        assert!(!q.take_prepared_committed(7), "once");
        assert!(q.detach(7, 42, false, 1));
        // No sender: COMMIT PREPARED asks for one, and a second asks for no other while it starts.
        assert_eq!(q.prepared_committed(7, 2), Wake::Start);
        assert_eq!(q.prepared_committed(7, 3), Wake::Later);
        // It failed to start: the maintenance worker finds the database orphaned, after the delay.
        q.failed(7);
        assert!(q.orphaned(4).is_empty());
        assert_eq!(q.orphaned(2 + RESTART_DELAY_US), vec![7]);
        assert!(q.start(7, 2 + RESTART_DELAY_US));
        assert!(q.attach(7, 43, 0x2000, 2 + RESTART_DELAY_US));
        assert!(q.take_prepared_committed(7));
        // A database with no queue of its own and none free: the next sender looks when it starts.
        let mut full = queues();
        for db in 1..=DATABASES as u32 {
            assert!(full.start(db, 0));
        }
        assert_eq!(full.prepared_committed(99, 0), Wake::Later);
        assert!(!full.take_prepared_committed(99));
    }
}
