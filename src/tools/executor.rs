//! Runs tools: each run is admitted into its tool's bounded queue, executed behind the
//! tool's concurrency limit, stopped at its deadline or on cancellation by dropping the
//! runner (which closes its upstream connection), reported as it goes, and recorded at
//! every step by the [`Recorder`].
//! Runs belong to the executor, not to the request that started them.

use futures_util::FutureExt;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

mod leases;
mod remote;

use super::error::RunError;
use super::live::{LiveRun, RunEvent, Started};
use super::recorder::{Recorder, now};
use super::registry::{ToolDefinition, ToolSettings};
use super::relay::Relay;
use super::runners::{Answer, Invocation};
use super::tool::{Admission, Tool};
use crate::conversations::Conversations;
use crate::domain::{NewThread, NewTurn, Role, RunStatus, ToolRun, Turn, ValidationError, storable_text};
use crate::metrics::Metrics;
use crate::store::{Page, RunQuery, Store};

/// How long shutdown waits for stopped runs to record themselves.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const TITLE_CHARS: usize = 80;

pub struct RunRequest {
    pub input: String,
    pub continuation_id: Option<Uuid>,
    pub timeout_secs: Option<u32>,
}

/// How execution ended, before it is recorded.
enum Ended {
    Answered(Answer),
    Failed(String),
    TimedOut,
    Cancelled,
}

#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    tools: BTreeMap<String, Arc<Tool>>,
    store: Arc<dyn Store>,
    conversations: Conversations,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    settings: ToolSettings,
    /// This process's instance id: the owner of the runs it starts.
    instance: String,
    /// Carries events and cancels to and from the other processes, when there are any.
    relay: Option<Arc<dyn Relay>>,
    live: Mutex<HashMap<Uuid, Arc<LiveRun>>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// How long a run may take: the tool's own `timeout_secs`, or less when the caller asks.
/// The tool's setting is a ceiling its operator chose (a cost, a quota); a caller asking
/// for more is refused rather than silently given less than asked.
fn run_timeout(asked_secs: Option<u32>, ceiling: Duration) -> Result<Duration, ValidationError> {
    match asked_secs {
        None => Ok(ceiling),
        Some(0) => Err(ValidationError::new("timeout_secs", "must be at least 1")),
        Some(secs) if Duration::from_secs(secs.into()) > ceiling => Err(ValidationError::new(
            "timeout_secs",
            format!("must be at most {}, the tool's own timeout_secs", ceiling.as_secs()),
        )),
        Some(secs) => Ok(Duration::from_secs(secs.into())),
    }
}

/// A title for a thread a run starts: the first line of its input, shortened.
fn title(input: &str) -> String {
    input.lines().next().unwrap_or_default().chars().take(TITLE_CHARS).collect()
}

impl Executor {
    pub fn new(
        settings: ToolSettings,
        store: Arc<dyn Store>,
        conversations: Conversations,
        metrics: Arc<Metrics>,
        instance: String,
        relay: Option<Arc<dyn Relay>>,
    ) -> Self {
        let client = super::runners::client();
        let tools = settings
            .definitions
            .iter()
            .map(|definition| (definition.name.clone(), Arc::new(Tool::new(definition.clone(), &client))))
            .collect();
        let inner = Inner {
            tools,
            recorder: Recorder::new(store.clone(), conversations.clone()),
            store,
            conversations,
            metrics,
            settings,
            instance,
            relay,
            live: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        Self { inner: Arc::new(inner) }
    }

    pub fn tools(&self) -> impl Iterator<Item = &ToolDefinition> {
        self.inner.tools.values().map(|tool| &tool.definition)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<LiveRun>>> {
        self.inner.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Accepts a run: checks the tool and the input, reads the thread's history, records
    /// the run with the room it needs on the thread (or is refused), and starts it.
    pub async fn start(&self, tool_name: &str, request: RunRequest) -> Result<Started, RunError> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(RunError::ShuttingDown);
        }
        let tool =
            inner.tools.get(tool_name).cloned().ok_or_else(|| RunError::ToolNotFound(tool_name.into()))?;
        NewTurn::new(Role::User, request.input.clone())
            .validate()
            .map_err(|e| ValidationError::new("input", e.message))?;
        let timeout = run_timeout(request.timeout_secs, tool.definition.timeout)?;
        let admission = tool
            .admit()
            .map_err(|admitted| RunError::Busy { tool: tool.definition.name.clone(), admitted })?;
        // The rest must not be cut short by a caller that goes away: that could leave a
        // thread without its run, or a run recorded and never started.
        let this = self.clone();
        let accepting = tokio::spawn(
            async move { this.accept(tool, request, timeout, admission).await }.in_current_span(),
        );
        accepting.await?
    }

    async fn accept(
        &self,
        tool: Arc<Tool>,
        request: RunRequest,
        timeout: Duration,
        admission: Admission,
    ) -> Result<Started, RunError> {
        let inner = &self.inner;
        let tool_name = &tool.definition.name;
        let conversations = &inner.conversations;
        let (thread_id, history) = match request.continuation_id {
            Some(id) => (id, conversations.continuation(id).await?),
            None => {
                let new = NewThread {
                    title: Some(title(&request.input)),
                    tool_name: Some(tool_name.clone()),
                    ..NewThread::default()
                };
                (conversations.create_thread(new).await?.0, Vec::new())
            }
        };
        let run = ToolRun {
            id: Uuid::new_v4(),
            tool: tool_name.clone(),
            status: RunStatus::Queued,
            continuation_id: thread_id,
            input: request.input,
            output: None,
            error: None,
            created_at: now(),
            started_at: None,
            finished_at: None,
            timeout_secs: u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX),
            turns_remaining: None,
        };
        // Refused here (409, 410) unless the thread has room for this run's turns besides
        // those of the runs already under way on it: no upstream call is spent on an
        // answer that could not be recorded.
        inner.store.reserve_run(&run, &self.lease(), *conversations.policy(), run.created_at).await?;

        let live = Arc::new(LiveRun::new());
        let outcome = live.outcome.subscribe();
        self.live().insert(run.id, live.clone());
        self.publish_events(run.id, &live);
        inner.metrics.runs_in_flight.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        let this = self.clone();
        let accepted = run.clone();
        // A child of the request's span: the run's log lines name the request that started it.
        let span =
            tracing::info_span!("tool_run", tool.name = %tool_name, run.id = %run.id, thread.id = %thread_id);
        let driving = async move {
            let driven =
                AssertUnwindSafe(this.drive(tool, accepted.clone(), history, live.clone(), deadline));
            if driven.catch_unwind().await.is_err() && live.outcome.borrow().is_none() {
                tracing::error!(run.id = %accepted.id, "a tool run panicked");
                this.finish(accepted, Ended::Failed("the run failed inside the server".into()), &live).await;
            }
            drop(admission);
        };
        inner.tasks.spawn(driving.instrument(span));
        Ok(Started { run, outcome })
    }

    async fn drive(
        &self,
        tool: Arc<Tool>,
        run: ToolRun,
        history: Vec<Turn>,
        live: Arc<LiveRun>,
        deadline: Instant,
    ) {
        let mut run = run;
        let ended = tokio::select! {
            ended = self.execute(&tool, &mut run, &history, &live, deadline) => ended,
            () = live.cancel.cancelled() => Ended::Cancelled,
            () = self.inner.shutdown.cancelled() => Ended::Failed("the server shut down before the run finished".into()),
            never = self.report_progress(&live, &tool.definition.name) => match never {},
        };
        self.finish(run, ended, &live).await;
    }

    /// Waits for a slot, then calls the upstream, all before the deadline.
    async fn execute(
        &self,
        tool: &Tool,
        run: &mut ToolRun,
        history: &[Turn],
        live: &LiveRun,
        deadline: Instant,
    ) -> Ended {
        let work = async {
            let Ok(_slot) = tool.slots.acquire().await else {
                return Err("the tool's queue was closed".to_owned());
            };
            run.status = RunStatus::Running;
            run.started_at = Some(now());
            live.running.store(true, Ordering::Release);
            // Recorded on the side: the upstream call should not wait for it, and the
            // store never lets it overwrite the final state if it lands late.
            let (this, running) = (self.clone(), run.clone());
            self.inner.tasks.spawn(async move { this.inner.recorder.save(&running).await }.in_current_span());
            let deltas = |text: String| {
                let _ = live.events.send(RunEvent::Delta { text });
            };
            tool.runner.run(Invocation { input: &run.input, history }, &deltas).await
        };
        match tokio::time::timeout_at(deadline, work).await {
            Err(_) => Ended::TimedOut,
            Ok(Err(message)) => Ended::Failed(message),
            Ok(Ok(answer)) => Ended::Answered(answer),
        }
    }

    async fn report_progress(&self, live: &LiveRun, tool: &str) -> Infallible {
        let every = self.inner.settings.progress_every;
        let started = Instant::now();
        let mut ticks = tokio::time::interval_at(started + every, every);
        loop {
            ticks.tick().await;
            let state =
                if live.running.load(Ordering::Acquire) { "running" } else { "waiting for a free slot" };
            let elapsed = started.elapsed();
            let message = format!("{tool} {state} for {} s", elapsed.as_secs());
            let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            let _ = live.events.send(RunEvent::Progress { elapsed_ms, message });
        }
    }

    /// Records how the run ended; a success adds the user and assistant turns together.
    async fn finish(&self, mut run: ToolRun, ended: Ended, live: &LiveRun) {
        match ended {
            Ended::Answered(answer) if answer.output.is_empty() => {
                run.status = RunStatus::Failed;
                run.error = Some("the tool answered with no text".into());
            }
            Ended::Answered(answer) => {
                match self.inner.recorder.add_to_thread(&run, &answer).await {
                    Ok(turns_remaining) => {
                        run.status = RunStatus::Completed;
                        run.turns_remaining = Some(turns_remaining);
                    }
                    Err(reason) => {
                        run.status = RunStatus::Failed;
                        run.error = Some(format!("the answer could not be added to the thread: {reason}"));
                    }
                }
                run.output = Some(answer.output);
            }
            Ended::Failed(message) => {
                run.status = RunStatus::Failed;
                run.error = Some(message);
            }
            Ended::TimedOut => {
                run.status = RunStatus::TimedOut;
                run.error = Some(format!("no answer within {} s", run.timeout_secs));
            }
            Ended::Cancelled => {
                run.status = RunStatus::Cancelled;
                run.error = Some("cancelled".into());
            }
        }
        // A completed run's output is its stored turn; anything else an upstream sent may
        // hold what no store keeps.
        run.output = run.output.map(storable_text);
        run.error = run.error.map(storable_text);
        let finished_at = now();
        run.finished_at = Some(finished_at);
        if let Some(stored) = self.inner.recorder.save_final(&run).await {
            tracing::warn!(
                status = stored.status.as_str(),
                ended = run.status.as_str(),
                "the run had been ended by another process"
            );
            run = stored;
        }

        let metrics = &self.inner.metrics;
        let took = (finished_at - run.created_at).to_std().unwrap_or_default();
        metrics.runs.with(&(run.tool.clone(), run.status.as_str())).observe(took);
        metrics.runs_in_flight.fetch_sub(1, Ordering::Relaxed);
        // The outcome first, then the event: a subscriber that arrives in between sees
        // the outcome, one that subscribed before gets the event.
        live.outcome.send_replace(Some(run.clone()));
        let _ = live.events.send(RunEvent::Finished(run.clone()));
        self.live().remove(&run.id);
    }

    pub async fn get(&self, id: Uuid) -> Result<ToolRun, RunError> {
        self.inner.store.get_run(id).await?.ok_or(RunError::RunNotFound(id))
    }

    pub async fn list(&self, query: &RunQuery) -> Result<Page<ToolRun>, RunError> {
        Ok(self.inner.store.list_runs(query).await?)
    }

    /// Stops every run (each records itself failed) and waits for them to finish.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!("tool runs did not all stop within {SHUTDOWN_GRACE:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_may_only_lower_a_tools_timeout() {
        let ceiling = Duration::from_secs(30);
        assert_eq!(run_timeout(None, ceiling).unwrap(), ceiling);
        assert_eq!(run_timeout(Some(5), ceiling).unwrap(), Duration::from_secs(5));
        assert_eq!(run_timeout(Some(30), ceiling).unwrap(), ceiling);
        assert!(run_timeout(Some(31), ceiling).unwrap_err().to_string().contains("timeout_secs"));
        assert!(run_timeout(Some(0), ceiling).is_err());
    }

    #[test]
    fn titles_are_the_first_line_shortened() {
        assert_eq!(title("Plan the refactor\nin detail"), "Plan the refactor");
        assert_eq!(title(&"x".repeat(200)).chars().count(), TITLE_CHARS);
    }
}
