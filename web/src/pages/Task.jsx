// A task: its status and runs (live, from the task's exchange messages), the actions the
// signed-in client may take, an INPUT task's request (and its answer), the selected run's
// artifacts and log, its dependencies and dependents, its history from the event log, and its
// definition.

import { useEffect, useMemo, useState } from 'preact/hooks';
import { ApiError, listAll, queue } from '../lib/api.js';
import { TASK_EXCHANGES, listen, taskKeyPattern } from '../lib/events.js';
import { useAsync, useTitle } from '../lib/hooks.js';
import { isSlugid } from '../lib/slugid.js';
import { isNewer } from '../lib/status.js';
import { Artifacts } from '../components/Artifacts.jsx';
import { CopyableId } from '../components/CopyableId.jsx';
import { History } from '../components/History.jsx';
import { InputRequest } from '../components/InputRequest.jsx';
import { Json } from '../components/Json.jsx';
import { LogViewer } from '../components/LogViewer.jsx';
import { Loading, Message } from '../components/Message.jsx';
import { Runs } from '../components/Runs.jsx';
import { Shell } from '../components/Shell.jsx';
import { State } from '../components/State.jsx';
import { TaskActions } from '../components/TaskActions.jsx';
import { Time } from '../components/Time.jsx';

export function TaskPage({ params: [taskId], query }) {
  useTitle(`Task ${taskId}`);
  if (!isSlugid(taskId)) {
    return (
      <>
        <h1>Task {taskId}</h1>
        <Message>
          <code>{taskId}</code> is not a valid taskId: a taskId is a 22-character slugid such
          as <code>fN1SbArXTPSVFNUvaOlinQ</code>.
        </Message>
      </>
    );
  }
  return <TaskView taskId={taskId} runParam={query.get('runId')} />;
}

function TaskView({ taskId, runParam }) {
  const loaded = useAsync((signal) => Promise.all([
    queue('GET', `/task/${taskId}`, { signal }),
    queue('GET', `/task/${taskId}/status`, { signal }),
  ]), [taskId]);
  const [status, setStatus] = useState(null);
  const [task, setTask] = useState(null);   // the definition, as created
  const [changes, setChanges] = useState(0);     // bumps when live messages arrive
  const [artifactChanges, setArtifactChanges] = useState(0);
  const [shellRun, setShellRun] = useState(null);
  const [liveState, setLiveState] = useState('');

  const acceptStatus = (next) => setStatus((current) => (isNewer(next, current) ? next : current));

  useEffect(() => {
    if (loaded.data) {
      setTask(loaded.data[0]);
      acceptStatus(loaded.data[1].status);
    }
  }, [loaded.data]);

  // Live: every message of this task's exchanges updates its status.
  useEffect(() => listen(
    TASK_EXCHANGES.map((exchange) => ({ exchange, routingKeyPattern: taskKeyPattern({ taskId }) })),
    (messages) => {
      for (const message of messages) {
        if (message.payload?.status) acceptStatus(message.payload.status);
        if (message.exchange.endsWith('artifact-created')) setArtifactChanges((n) => n + 1);
      }
      setChanges((n) => n + 1);
    },
    setLiveState,
  ), [taskId]);

  useTitle(task ? `${task.metadata?.name ?? taskId} (${status?.state ?? '…'})` : `Task ${taskId}`);

  if (loaded.error) {
    const notFound = loaded.error instanceof ApiError && loaded.error.status === 404;
    return (
      <>
        <h1>Task {taskId}</h1>
        {notFound
          ? <Message>Task <code>{taskId}</code> not found: it may never have existed, or it expired.</Message>
          : <Message error={loaded.error} />}
      </>
    );
  }
  if (!task || !status) return <><h1>Task {taskId}</h1><Loading /></>;

  const runs = status.runs ?? [];
  const requested = runParam !== null && /^\d+$/.test(runParam) ? Number(runParam) : null;
  const runId = requested ?? (runs.length > 0 ? runs[runs.length - 1].runId : null);
  const run = runs.find((candidate) => candidate.runId === runId);

  return (
    <>
      <h1>{task.metadata?.name ?? taskId}</h1>
      {liveState && <p class="notice" role="status">{liveState}</p>}
      <section aria-labelledby="status-title" class="summary">
        <h2 id="status-title" class="visually-hidden">Status</h2>
        <dl class="facts">
          <div><dt>State</dt><dd><State state={status.state} testid="task-state" /></dd></div>
          <div><dt>Task ID</dt><dd><CopyableId id={taskId} /></dd></div>
          <div><dt>Task group</dt><dd><a href={`/groups/${task.taskGroupId}`}>{task.taskGroupId}</a></dd></div>
          <div><dt>Task queue</dt><dd><a href={`/queues/${task.taskQueueId}`}>{task.taskQueueId}</a></dd></div>
          <div><dt>Priority</dt><dd>{status.priority ?? task.priority}</dd></div>
          <div><dt>Scheduler / project</dt><dd>{task.schedulerId} / {task.projectId}</dd></div>
          <div><dt>Owner</dt><dd>{task.metadata?.owner}</dd></div>
          <div><dt>Created</dt><dd><Time value={task.created} /></dd></div>
          <div><dt>Deadline</dt><dd><Time value={task.deadline} /></dd></div>
          <div><dt>Retries left</dt><dd>{status.retriesLeft}</dd></div>
        </dl>
        {task.metadata?.description && <p class="description">{task.metadata.description}</p>}
        <TaskActions
          taskId={taskId} task={task} status={status} onStatus={acceptStatus}
          onShell={(shellRunId) => setShellRun(shellRunId)}
        />
      </section>
      {shellRun !== null && <Shell taskId={taskId} runId={shellRun} onClose={() => setShellRun(null)} />}
      {asksForInput(task.payload) && run && <InputRequest taskId={taskId} task={task} run={run} />}

      <section aria-labelledby="runs-title">
        <h2 id="runs-title">Runs</h2>
        <Runs runs={runs} selected={runId} />
      </section>

      {run && <RunDetails taskId={taskId} run={run} artifactChanges={artifactChanges} />}

      <section aria-labelledby="relations-title">
        <h2 id="relations-title">Dependencies and dependents</h2>
        <Relations taskId={taskId} dependencies={task.dependencies ?? []} changes={changes} />
      </section>

      <section aria-labelledby="history-title">
        <h2 id="history-title">History</h2>
        <TaskHistory taskId={taskId} changes={changes} />
      </section>

      <section aria-labelledby="definition-title">
        <h2 id="definition-title">Definition</h2>
        <Json value={task} testid="definition" label="Task definition" />
      </section>
    </>
  );
}

// An INPUT task's payload: one that names the kind, or one without a kind that asks.
function asksForInput(payload) {
  return payload?.kind === 'input' || (payload?.kind === undefined && typeof payload?.request === 'string');
}

// The selected run's artifacts and log. The log starts once its artifact exists.
function RunDetails({ taskId, run, artifactChanges }) {
  const artifacts = useAsync(
    (signal) => listAll('queue', `/task/${taskId}/runs/${run.runId}/artifacts`, 'artifacts', { signal }),
    [taskId, run.runId, artifactChanges, run.state],
  );
  // Keep the last list while a new one loads, so the log viewer is not torn down.
  const [list, setList] = useState([]);
  useEffect(() => { if (artifacts.data) setList(artifacts.data); }, [artifacts.data]);
  useEffect(() => setList([]), [taskId, run.runId]);

  const logName = useMemo(() => {
    const names = list.map((artifact) => artifact.name);
    return names.find((name) => name === 'public/logs/live.log') ?? names.find((name) => /logs\/live\.log$/.test(name));
  }, [list]);

  return (
    <>
      <section aria-labelledby="log-title">
        <h2 id="log-title">Log of run {run.runId}</h2>
        {logName
          ? <LogViewer taskId={taskId} runId={run.runId} name={logName} resolved={Boolean(run.resolved)} />
          : <p>{run.state === 'pending' ? 'The log starts when a worker claims the run.'
            : run.state === 'running' ? 'Waiting for the worker to publish the log…'
              : 'This run has no log.'}</p>}
      </section>
      <section aria-labelledby="artifacts-title">
        <h2 id="artifacts-title">Artifacts of run {run.runId}</h2>
        {artifacts.error ? <Message error={artifacts.error} /> : <Artifacts taskId={taskId} runId={run.runId} artifacts={list} />}
      </section>
    </>
  );
}

function Relations({ taskId, dependencies, changes }) {
  const statuses = useAsync(async (signal) => {
    if (dependencies.length === 0) return {};
    const answer = await queue('POST', '/tasks/status', { body: { taskIds: dependencies }, signal });
    return Object.fromEntries(answer.statuses.map((entry) => [entry.taskId, entry.status.state]));
  }, [dependencies.join(), changes]);
  const dependents = useAsync(
    (signal) => listAll('queue', `/task/${taskId}/dependents`, 'tasks', { signal, maxItems: 1000 }),
    [taskId, changes],
  );
  return (
    <div class="relations">
      <div>
        <h3>Dependencies ({dependencies.length})</h3>
        {dependencies.length === 0 ? <p>None.</p> : (
          <ul>
            {dependencies.map((id) => (
              <li key={id}>
                <a data-testid="dependency" href={`/tasks/${id}`}>{id}</a>
                {statuses.data?.[id] && <> <State state={statuses.data[id]} /></>}
              </li>
            ))}
          </ul>
        )}
      </div>
      <div>
        <h3>Dependents{dependents.data ? ` (${dependents.data.length}${dependents.data.truncated ? '+' : ''})` : ''}</h3>
        {dependents.error ? <Message error={dependents.error} />
          : !dependents.data ? <Loading />
            : dependents.data.length === 0 ? <p>None.</p> : (
              <ul>
                {dependents.data.map(({ task, status }) => (
                  <li key={status.taskId}>
                    <a data-testid="dependent" href={`/tasks/${status.taskId}`}>{task.metadata?.name ?? status.taskId}</a>
                    {' '}<State state={status.state} />
                  </li>
                ))}
              </ul>
            )}
      </div>
    </div>
  );
}

function TaskHistory({ taskId, changes }) {
  const history = useAsync(
    (signal) => listAll('queue', `/task/${taskId}/history`, 'events', { signal }),
    [taskId, changes],
  );
  const [events, setEvents] = useState(null);
  useEffect(() => { if (history.data) setEvents(history.data); }, [history.data]);
  if (history.error) return <Message error={history.error} />;
  if (!events) return <Loading />;
  return <History events={events} />;
}
