//! The scheduler: runs every check at its own interval, for as long as the agent lives.
//!
//! - **No drift.** A check's next slot is its previous *slot* plus its interval, never "now plus
//!   the interval", so hours of runs keep their phase. A slot missed because the process stalled
//!   is skipped, not run late in a burst.
//! - **Spread.** Each check's first slot is offset by a jitter derived from its id (stable across
//!   restarts), within `min(interval, 30 s)`, so a thousand checks do not fire in the same
//!   millisecond.
//! - **Bounded.** At most `concurrency` probes run at once; a check never overlaps itself (a slot
//!   that comes while the previous probe still runs is skipped and counted).
//! - **Never blocked downstream.** Results go out with `try_send`: if the consumer lags, the
//!   result is dropped and counted, and the probe is never held up by the database or alerting.
//!
//! The probe itself is a parameter, so the daemon passes [`crate::probe::run`] and tests can
//! drive the schedule on tokio's virtual clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use mesh_proto::CheckId;

use crate::plan::CheckSpec;
use crate::probe::Outcome;

/// The widest window over which first runs are spread.
const MAX_SPREAD: Duration = Duration::from_secs(30);

/// One probe run, as the scheduler reports it.
#[derive(Debug)]
pub struct ProbeResult {
    /// The check.
    pub check: Arc<CheckSpec>,
    /// When the run was due.
    pub scheduled: Instant,
    /// When it actually started (after waiting for a concurrency slot).
    pub started: Instant,
    /// What the probe found.
    pub outcome: Outcome,
}

impl ProbeResult {
    /// How late the run started: the scheduler's start-time drift for this run.
    pub fn start_delay(&self) -> Duration {
        self.started.saturating_duration_since(self.scheduled)
    }
}

/// Counters the scheduler keeps for metrics.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Probe runs started.
    pub started: AtomicU64,
    /// Slots skipped because the check's previous probe was still running.
    pub overlapping: AtomicU64,
    /// Slots skipped because the process stalled past them.
    pub missed: AtomicU64,
    /// Results dropped because the consumer lagged.
    pub dropped: AtomicU64,
}

/// The first slot of `check`, relative to the scheduler's start: a jitter derived from its id.
pub fn first_offset(check: &CheckSpec) -> Duration {
    let window = check.interval.min(MAX_SPREAD).as_millis().max(1);
    // FNV-1a: stable across processes and releases, unlike std's RandomState.
    let hash = check
        .id
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    Duration::from_millis(u64::try_from(u128::from(hash) % window).unwrap_or(0))
}

/// Runs `checks` until `shutdown` turns true, sending every result to `results`.
///
/// A check id received on `run_now` runs at once, outside its schedule (its slots stay where
/// they are), unless it is already running: this is how a state change asks for a
/// confirmation. Unknown ids are ignored.
///
/// Returns once shutdown is seen; probes still running are left to finish on their own tasks
/// (each is bounded by its timeout) and their results are still sent.
pub async fn run<P, F>(
    checks: Vec<Arc<CheckSpec>>,
    concurrency: usize,
    probe: P,
    results: mpsc::Sender<ProbeResult>,
    mut run_now: mpsc::Receiver<CheckId>,
    stats: Arc<SchedulerStats>,
    mut shutdown: watch::Receiver<bool>,
) where
    P: Fn(Arc<CheckSpec>) -> F + Send + Sync + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    let launcher = Launcher {
        probe: Arc::new(probe),
        permits: Arc::new(Semaphore::new(concurrency.max(1))),
        results,
        stats: stats.clone(),
    };
    let busy: Vec<Arc<AtomicBool>> = checks.iter().map(|_| Arc::default()).collect();
    let index_of: HashMap<&CheckId, usize> =
        checks.iter().enumerate().map(|(i, c)| (&c.id, i)).collect();
    let start = Instant::now();
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = checks
        .iter()
        .enumerate()
        .map(|(i, check)| Reverse((start + first_offset(check), i)))
        .collect();
    let mut run_now_open = true;

    loop {
        let next_slot = due.peek().map(|Reverse((slot, _))| *slot);
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            request = run_now.recv(), if run_now_open => {
                match request.and_then(|id| index_of.get(&id).copied()) {
                    Some(index) => launcher.launch(&checks[index], &busy[index], Instant::now()),
                    None => run_now_open = !run_now.is_closed(),
                }
                continue;
            }
            () = sleep_until_or_forever(next_slot) => {}
        }
        let Some(Reverse((slot, index))) = due.pop() else {
            continue;
        };
        let check = &checks[index];
        // The next slot keeps the phase; slots the process slept through are skipped.
        let now = Instant::now();
        let mut next = slot + check.interval;
        while next <= now {
            next += check.interval;
            stats.missed.fetch_add(1, Ordering::Relaxed);
        }
        due.push(Reverse((next, index)));
        launcher.launch(check, &busy[index], slot);
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Starts probe runs: one task each, under the concurrency bound, never two of one check.
struct Launcher<P> {
    probe: Arc<P>,
    permits: Arc<Semaphore>,
    results: mpsc::Sender<ProbeResult>,
    stats: Arc<SchedulerStats>,
}

impl<P, F> Launcher<P>
where
    P: Fn(Arc<CheckSpec>) -> F + Send + Sync + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    fn launch(&self, check: &Arc<CheckSpec>, busy: &Arc<AtomicBool>, scheduled: Instant) {
        if busy.swap(true, Ordering::AcqRel) {
            self.stats.overlapping.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        let (check, busy, probe, permits, results, stats) = (
            check.clone(),
            busy.clone(),
            self.probe.clone(),
            self.permits.clone(),
            self.results.clone(),
            self.stats.clone(),
        );
        tokio::spawn(async move {
            // The semaphore is never closed; without a permit, run anyway rather than never.
            let _permit = permits.acquire_owned().await.ok();
            let started = Instant::now();
            let outcome = probe(check.clone()).await;
            busy.store(false, Ordering::Release);
            let result = ProbeResult {
                check,
                scheduled,
                started,
                outcome,
            };
            if results.try_send(result).is_err() {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use mesh_proto::Status;

    use super::*;
    use crate::plan::{ProbeSpec, TcpSpec};

    fn check(name: &str, interval: Duration) -> Arc<CheckSpec> {
        Arc::new(CheckSpec {
            id: format!("{name}/tcp:1").parse::<CheckId>().expect("id"),
            interval,
            timeout: interval / 2,
            probe: ProbeSpec::Tcp(TcpSpec {
                host: "127.0.0.1".into(),
                port: 1,
            }),
        })
    }

    /// A probe that takes `cost` of virtual time.
    fn probe_taking(
        cost: Duration,
    ) -> impl Fn(Arc<CheckSpec>) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>>
    + Send
    + Sync
    + 'static {
        move |_| {
            Box::pin(async move {
                tokio::time::sleep(cost).await;
                Outcome::new(Status::Operational, "ok")
            })
        }
    }

    struct Run {
        results: Vec<ProbeResult>,
        stats: Arc<SchedulerStats>,
    }

    async fn run_for(
        checks: Vec<Arc<CheckSpec>>,
        concurrency: usize,
        cost: Duration,
        span: Duration,
    ) -> Run {
        let (tx, mut rx) = mpsc::channel(1 << 20);
        let (stop_tx, stop_rx) = watch::channel(false);
        let stats = Arc::new(SchedulerStats::default());
        let task = tokio::spawn(run(
            checks,
            concurrency,
            probe_taking(cost),
            tx,
            mpsc::channel(1).1,
            stats.clone(),
            stop_rx,
        ));
        tokio::time::sleep(span).await;
        stop_tx.send(true).expect("scheduler alive");
        task.await.expect("scheduler task");
        // Let in-flight probes finish (virtual time) and collect everything.
        tokio::time::sleep(cost * 2).await;
        let mut results = Vec::new();
        while let Ok(r) = rx.try_recv() {
            results.push(r);
        }
        Run { results, stats }
    }

    #[tokio::test(start_paused = true)]
    async fn three_hours_of_runs_keep_their_phase() {
        let start = Instant::now();
        let checks = vec![
            check("a", Duration::from_secs(10)),
            check("b", Duration::from_secs(7)),
        ];
        let run = run_for(
            checks.clone(),
            4,
            Duration::from_millis(300),
            Duration::from_secs(3 * 3600),
        )
        .await;
        let mut per_check: HashMap<String, Vec<&ProbeResult>> = HashMap::new();
        for r in &run.results {
            per_check.entry(r.check.id.to_string()).or_default().push(r);
        }
        for c in &checks {
            let runs = &per_check[&c.id.to_string()];
            let expected =
                (3 * 3600 * 1000 - first_offset(c).as_millis()) / c.interval.as_millis() + 1;
            assert_eq!(runs.len() as u128, expected, "{}", c.id);
            for (n, r) in runs.iter().enumerate() {
                let slot = start + first_offset(c) + c.interval * u32::try_from(n).expect("small");
                assert_eq!(r.scheduled, slot, "{} run {n} drifted", c.id);
                assert_eq!(r.start_delay(), Duration::ZERO);
            }
        }
        assert_eq!(run.stats.missed.load(Ordering::Relaxed), 0);
        assert_eq!(run.stats.overlapping.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn late_wakeups_do_not_shift_the_phase() {
        // Time moves in 1.3 s jumps, so every wake-up of a 1 s schedule comes late: a scheduler
        // that counted from "now" would drift by up to 1.3 s per run.
        let c = check("late", Duration::from_secs(1));
        let (tx, mut rx) = mpsc::channel(1 << 16);
        let (stop_tx, stop_rx) = watch::channel(false);
        let stats = Arc::new(SchedulerStats::default());
        let task = tokio::spawn(run(
            vec![c.clone()],
            4,
            probe_taking(Duration::ZERO),
            tx,
            mpsc::channel(1).1,
            stats.clone(),
            stop_rx,
        ));
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(1300)).await;
            tokio::task::yield_now().await;
        }
        stop_tx.send(true).expect("alive");
        task.await.expect("task");
        let mut runs = 0;
        let mut first = None;
        while let Ok(r) = rx.try_recv() {
            let origin = *first.get_or_insert(r.scheduled);
            let phase = r.scheduled.duration_since(origin);
            assert_eq!(phase.subsec_nanos(), 0, "run {runs} off phase by {phase:?}");
            assert!(
                r.start_delay() < Duration::from_millis(1300),
                "{:?}",
                r.start_delay()
            );
            runs += 1;
        }
        assert!(runs >= 90, "{runs} runs");
        assert!(
            stats.missed.load(Ordering::Relaxed) > 0,
            "jumps past a whole slot are skipped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn first_runs_are_spread_and_concurrency_is_bounded() {
        let checks: Vec<Arc<CheckSpec>> = (0..1000)
            .map(|i| check(&format!("t{i}"), Duration::from_secs(300)))
            .collect();
        let run = run_for(
            checks,
            16,
            Duration::from_millis(100),
            Duration::from_secs(31),
        )
        .await;
        assert_eq!(
            run.results.len(),
            1000,
            "every check ran once in its first 30 s"
        );
        let start = run
            .results
            .iter()
            .map(|r| r.scheduled)
            .min()
            .expect("results");
        let mut per_second = [0usize; 31];
        for r in &run.results {
            per_second[r.scheduled.duration_since(start).as_secs() as usize] += 1;
        }
        assert!(
            per_second.iter().all(|&n| n < 100),
            "first runs bunch up: {per_second:?}"
        );
        let in_flight_max = max_in_flight(&run.results, Duration::from_millis(100));
        assert!(in_flight_max <= 16, "{in_flight_max} probes ran at once");
    }

    fn max_in_flight(results: &[ProbeResult], cost: Duration) -> usize {
        let mut events: Vec<(Instant, i32)> = results
            .iter()
            .flat_map(|r| [(r.started, 1), (r.started + cost, -1)])
            .collect();
        events.sort_by_key(|&(t, delta)| (t, delta));
        let mut now = 0i32;
        let mut max = 0i32;
        for (_, delta) in events {
            now += delta;
            max = max.max(now);
        }
        usize::try_from(max).unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_slower_than_its_interval_skips_slots_instead_of_overlapping() {
        let run = run_for(
            vec![check("slow", Duration::from_secs(1))],
            4,
            Duration::from_millis(2500),
            Duration::from_secs(10),
        )
        .await;
        let overlapping = run.stats.overlapping.load(Ordering::Relaxed);
        assert!(overlapping >= 5, "{overlapping}");
        assert!(
            run.results.len() <= 4,
            "{} runs of a 2.5 s probe in 10 s",
            run.results.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_consumer_drops_results_and_never_blocks_probes() {
        let (tx, _rx_never_read) = mpsc::channel(2);
        let (stop_tx, stop_rx) = watch::channel(false);
        let stats = Arc::new(SchedulerStats::default());
        let checks: Vec<Arc<CheckSpec>> = (0..10)
            .map(|i| check(&format!("c{i}"), Duration::from_secs(1)))
            .collect();
        let task = tokio::spawn(run(
            checks,
            10,
            probe_taking(Duration::from_millis(10)),
            tx,
            mpsc::channel(1).1,
            stats.clone(),
            stop_rx,
        ));
        tokio::time::sleep(Duration::from_secs(60)).await;
        stop_tx.send(true).expect("alive");
        task.await.expect("task");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = stats.started.load(Ordering::Relaxed);
        assert!(started >= 590, "probes kept running: {started}");
        assert_eq!(stats.dropped.load(Ordering::Relaxed), started - 2);
    }

    #[test]
    fn first_offsets_are_stable_and_inside_the_window() {
        let c = check("site", Duration::from_secs(300));
        assert_eq!(first_offset(&c), first_offset(&c.clone()));
        assert!(first_offset(&c) < MAX_SPREAD);
        let short = check("site", Duration::from_secs(2));
        assert!(first_offset(&short) < Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_now_request_runs_at_once_and_keeps_the_schedule() {
        let checks = vec![check("a", Duration::from_secs(60))];
        let first = first_offset(&checks[0]);
        let (tx, mut rx) = mpsc::channel(16);
        let (now_tx, now_rx) = mpsc::channel(4);
        let (stop_tx, stop_rx) = watch::channel(false);
        let start = Instant::now();
        let task = tokio::spawn(run(
            checks.clone(),
            4,
            probe_taking(Duration::from_millis(10)),
            tx,
            now_rx,
            Arc::new(SchedulerStats::default()),
            stop_rx,
        ));
        assert_eq!(rx.recv().await.expect("first run").scheduled, start + first);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let asked = Instant::now();
        now_tx
            .send(checks[0].id.clone())
            .await
            .expect("scheduler alive");
        now_tx
            .send("unknown/health".parse().expect("id"))
            .await
            .expect("scheduler alive");
        let extra = rx.recv().await.expect("run-now result");
        assert_eq!(extra.scheduled, asked);
        assert_eq!(
            rx.recv().await.expect("next slot").scheduled,
            start + first + Duration::from_secs(60),
            "the schedule keeps its phase"
        );
        stop_tx.send(true).expect("scheduler alive");
        task.await.expect("scheduler task");
    }
}
