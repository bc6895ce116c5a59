//! Group commit: how concurrent [`SkuStore::commit`] calls share one
//! transaction.
//!
//! Why: event ids come from one clock row held until commit (that is what
//! keeps the feed gap-free), so one transaction per write means commits, and
//! their fsyncs, happen strictly one after another. Here every `commit` call
//! (a SKU actor's writes, a batch, a chunk of a CSV import) queues to a few
//! committer tasks; each takes whatever is queued (up to [`MAX_GROUP`] jobs,
//! never splitting a call), runs it as ONE transaction
//! ([`super::write::transaction_with`]), commits once, and only then answers
//! every caller. A call's jobs stay contiguous and in order in the group.
//!
//! The queue is bounded (`SKUWATCH_WRITE_QUEUE` calls): one more is refused
//! at once with [`StoreError::Busy`] (503 `overloaded` with `Retry-After`,
//! counted in `skuwatch_write_queue_refused_total`); a deeper queue would
//! only mean longer waits. A call not taken by a committer within the
//! acquire timeout is withdrawn (nothing done, `Busy` too).
//!
//! If a group transaction fails before COMMIT (say a constraint the domain
//! did not foresee), nothing of it is kept and each job is run again alone,
//! in order, so one bad write cannot fail the others.
//!
//! [`SkuStore::commit`]: skuwatch_actors::store::SkuStore::commit

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skuwatch_actors::messages::Claim;
use skuwatch_actors::store::{StoreError, WriteJob, WriteOutcome};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::write::{split_blocked, transaction_with, Locking, Ran};
use super::SqlStore;
use crate::store::Backend;

/// Most jobs in one transaction (a call is never split, so a larger call
/// makes a larger group): bounds the statement size and the time the first
/// caller waits.
pub(super) const MAX_GROUP: usize = 256;

/// `commit` calls queued for the committers at most, by default
/// (`SKUWATCH_WRITE_QUEUE`).
pub const DEFAULT_QUEUE: usize = 16 * MAX_GROUP;

type Outcomes = Vec<Result<WriteOutcome, StoreError>>;

/// One `commit` call.
struct Call {
    jobs: Vec<WriteJob>,
    /// Taken by the committer that runs the call; withdrawn by a caller
    /// that waited longer than the acquire timeout (nothing done then).
    claim: Claim,
    reply: oneshot::Sender<Outcomes>,
}

/// The queue in front of the committer tasks. Dropping the last handle ends
/// them once the queue is empty.
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Call>,
    /// How long a queued call may wait for a committer to take it.
    wait: Duration,
}

impl GroupCommit {
    /// Starts `committers` tasks, each running one group transaction at a
    /// time on its own connection from `store`'s write pool: while one
    /// waits for its COMMIT, the next group is already being prepared.
    /// At most `bound` calls wait in the queue.
    pub(super) fn start(store: SqlStore, committers: usize, bound: usize, wait: Duration) -> Self {
        let (queue, rx) = mpsc::channel(bound.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let store = Arc::new(store);
        for _ in 0..committers.max(1) {
            tokio::spawn(committer(store.clone(), rx.clone()));
        }
        Self { queue, wait }
    }

    /// Queues one call and waits for its durable outcomes.
    pub(super) async fn commit(&self, jobs: Vec<WriteJob>) -> Outcomes {
        if jobs.is_empty() {
            return Vec::new();
        }
        let count = jobs.len();
        let failed = |e: StoreError| (0..count).map(|_| Err(e.clone())).collect();
        let (reply, answer) = oneshot::channel();
        let claim = Claim::default();
        let call = Call {
            jobs,
            claim: claim.clone(),
            reply,
        };
        if let Err(e) = self.queue.try_send(call) {
            return failed(match e {
                mpsc::error::TrySendError::Full(_) => {
                    metrics::counter!(crate::metrics::WRITE_QUEUE_REFUSED).increment(1);
                    StoreError::Busy("the write queue is full".into())
                }
                mpsc::error::TrySendError::Closed(_) => {
                    StoreError::Unavailable("store is shutting down".into())
                }
            });
        }
        // A committer that took the call runs it to its end: only a call
        // still queued can be withdrawn (then it never runs).
        let lost = |_| failed(StoreError::OutcomeUnknown("group commit ended".into()));
        tokio::pin!(answer);
        tokio::select! {
            outcomes = &mut answer => outcomes.unwrap_or_else(lost),
            _ = tokio::time::sleep(self.wait) => {
                if claim.withdraw() {
                    return failed(StoreError::Busy(
                        "no group committer took the write in time".into(),
                    ));
                }
                answer.await.unwrap_or_else(lost)
            }
        }
    }
}

async fn committer(store: Arc<SqlStore>, rx: Arc<Mutex<mpsc::Receiver<Call>>>) {
    loop {
        let mut group = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(call) => group.push(call),
                None => return,
            }
            let mut jobs = group[0].jobs.len();
            while jobs < MAX_GROUP {
                match rx.try_recv() {
                    Ok(call) => {
                        jobs += call.jobs.len();
                        group.push(call);
                    }
                    Err(_) => break,
                }
            }
        }
        // Calls whose callers stopped waiting are dropped unrun.
        group.retain(|call| call.claim.start());
        if group.is_empty() {
            continue;
        }
        let calls: Vec<(Vec<WriteJob>, oneshot::Sender<Outcomes>)> = group
            .into_iter()
            .map(|call| (call.jobs, call.reply))
            .collect();
        let jobs: Vec<&WriteJob> = calls.iter().flat_map(|(jobs, _)| jobs).collect();
        let mut outcomes = run(&store, &jobs).await.into_iter();
        for (jobs, reply) in calls {
            let _ = reply.send(outcomes.by_ref().take(jobs.len()).collect());
        }
    }
}

/// Runs a group, one outcome per job, in order.
#[tracing::instrument(level = "debug", skip_all, fields(writes = jobs.len(), transactions, elapsed_ms))]
pub(super) async fn run(store: &SqlStore, jobs: &[&WriteJob]) -> Outcomes {
    let started = Instant::now();
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut rest = jobs;
    let mut transactions = 0;
    while !rest.is_empty() {
        // The same idempotency key twice in one transaction would see its
        // own unfinished claim: the group is cut before the second, which
        // starts the next transaction (jobs keep their order).
        let mut keys = HashSet::new();
        let cut = rest
            .iter()
            .position(|job| {
                job.idempotency()
                    .is_some_and(|i| !keys.insert((&i.scope, &i.key)))
            })
            .unwrap_or(rest.len());
        let (now, later) = rest.split_at(cut);
        outcomes.extend(run_one(store, now).await);
        transactions += 1;
        rest = later;
    }
    let span = tracing::Span::current();
    span.record("transactions", transactions);
    span.record("elapsed_ms", started.elapsed().as_secs_f64() * 1e3);
    outcomes
}

async fn run_one(store: &SqlStore, jobs: &[&WriteJob]) -> Outcomes {
    // A group of more than one job on PostgreSQL locks without waiting
    // first (`Locking::Probe`): a row another transaction holds then
    // delays only the jobs that write it.
    let locking = if jobs.len() > 1 && store.backend() == Backend::Postgres {
        Locking::Probe
    } else {
        Locking::Wait
    };
    run_locking(store, jobs, locking).await
}

async fn run_locking(store: &SqlStore, jobs: &[&WriteJob], locking: Locking) -> Outcomes {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match transaction_with(store, jobs, locking).await {
            Ok(Ran::Done(outcomes)) => return outcomes.into_iter().map(Ok).collect(),
            Ok(Ran::Blocked { job_skus, blocked }) => {
                let (clear, waiting) = split_blocked(&job_skus, blocked);
                tracing::debug!(
                    clear = clear.len(),
                    waiting = waiting.len(),
                    "rows locked by another transaction; the jobs clear of them go first"
                );
                let pick = |indices: &[usize]| indices.iter().map(|&i| jobs[i]).collect::<Vec<_>>();
                let mut outcomes: Vec<Option<Result<WriteOutcome, StoreError>>> =
                    (0..jobs.len()).map(|_| None).collect();
                if !clear.is_empty() {
                    let first = Box::pin(run_one(store, &pick(&clear))).await;
                    for (i, outcome) in clear.iter().zip(first) {
                        outcomes[*i] = Some(outcome);
                    }
                }
                let then = Box::pin(run_locking(store, &pick(&waiting), Locking::Wait)).await;
                for (i, outcome) in waiting.iter().zip(then) {
                    outcomes[*i] = Some(outcome);
                }
                return outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| Err(StoreError::Corrupt("a job lost".into()))))
                    .collect();
            }
            // The database aborted the transaction to resolve a conflict
            // (serialisation failure, deadlock): nothing was kept, run it
            // again.
            Err(e @ StoreError::Database(_)) if e.is_retryable() && attempts < 3 => {
                tracing::debug!(error = %e, "write transaction aborted; running it again");
            }
            Err(e @ (StoreError::Database(_) | StoreError::Corrupt(_))) if jobs.len() > 1 => {
                // Nothing of the group was kept (the transaction is dropped,
                // so rolled back); each job runs alone and gets its own answer.
                tracing::warn!(error = %e, writes = jobs.len(), "group write failed; retrying one by one");
                let mut outcomes = Vec::with_capacity(jobs.len());
                for job in jobs {
                    let one = std::slice::from_ref(job);
                    outcomes.extend(Box::pin(run_locking(store, one, Locking::Wait)).await);
                }
                return outcomes;
            }
            // A bounded wait elapsed, the connection was lost, or COMMIT
            // failed: the same for every job (running each alone would only
            // wait again, once per job).
            Err(e) => return jobs.iter().map(|_| Err(e.clone())).collect(),
        }
    }
}
