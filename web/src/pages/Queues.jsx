// Task queues: each with its pending and claimed counts and the age of its oldest pending
// run; a queue's page adds its pending and claimed tasks and its workers, with a quarantine
// action for clients allowed to use it.

import { useState } from 'preact/hooks';
import { listAll, queue, segment } from '../lib/api.js';
import { formatAge } from '../lib/format.js';
import { useAsync, useTitle } from '../lib/hooks.js';
import { pagePath } from '../lib/router.js';
import { required, satisfies } from '../lib/scopes.js';
import { useSession } from '../lib/session.js';
import { Loading, Message } from '../components/Message.jsx';
import { Time } from '../components/Time.jsx';

// The queue's oldest pending run: the earliest `inserted` among its first pending tasks.
async function oldestPending(taskQueueId, signal) {
  const page = await queue('GET', `/task-queues/${segment(taskQueueId, true)}/pending`, { query: { limit: 1000 }, signal });
  const times = (page.tasks ?? []).map((entry) => entry.inserted).filter(Boolean).sort();
  return times[0] ?? null;
}

async function countsOf(ids, signal) {
  if (ids.length === 0) return {};
  const answers = [];
  for (let at = 0; at < ids.length; at += 1000) {
    const { taskQueueCounts } = await queue('POST', '/task-queues/counts', { body: { taskQueueIds: ids.slice(at, at + 1000) }, signal });
    answers.push(...taskQueueCounts);
  }
  return Object.fromEntries(answers.map((entry) => [entry.taskQueueId, entry]));
}

function OldestPending({ taskQueueId, pending }) {
  const oldest = useAsync((signal) => (pending > 0 ? oldestPending(taskQueueId, signal) : Promise.resolve(null)), [taskQueueId, pending]);
  if (pending === 0) return <span>—</span>;
  if (oldest.error) return <span title={oldest.error.message}>unknown</span>;
  return oldest.data ? <span title={oldest.data}>{formatAge(oldest.data)}</span> : <span>…</span>;
}

export function QueuesPage() {
  useTitle('Task queues');
  const loaded = useAsync(async (signal) => {
    const queues = await listAll('queue', '/task-queues', 'taskQueues', { signal });
    const counts = await countsOf(queues.map((entry) => entry.taskQueueId), signal).catch(() => ({}));
    return { queues, counts };
  }, []);

  return (
    <>
      <h1>Task queues</h1>
      {loaded.error ? <Message error={loaded.error} />
        : loaded.loading && !loaded.data ? <Loading />
          : loaded.data.queues.length === 0 ? <Message>No task queues yet: a queue appears when a worker first asks it for work.</Message>
            : (
              <>
                <button type="button" onClick={loaded.reload}>Refresh</button>
                <table class="table">
                  <thead>
                    <tr><th scope="col">Task queue</th><th scope="col">Pending</th><th scope="col">Claimed</th>
                      <th scope="col">Oldest pending</th><th scope="col" class="col-wide">Last active</th></tr>
                  </thead>
                  <tbody>
                    {loaded.data.queues.map(({ taskQueueId, lastDateActive }) => {
                      const counts = loaded.data.counts[taskQueueId];
                      return (
                        <tr key={taskQueueId} data-testid="queue-row" data-task-queue-id={taskQueueId}>
                          <th scope="row"><a href={pagePath('queues', taskQueueId)}>{taskQueueId}</a></th>
                          <td data-testid="pending">{counts?.pendingTasks ?? '?'}</td>
                          <td data-testid="claimed">{counts?.claimedTasks ?? '?'}</td>
                          <td><OldestPending taskQueueId={taskQueueId} pending={counts?.pendingTasks ?? 0} /></td>
                          <td class="col-wide"><Time value={lastDateActive} /></td>
                        </tr>
                      );
                    })}
                  </tbody>
                </table>
              </>
            )}
    </>
  );
}

export function QueuePage({ params: [taskQueueId] }) {
  useTitle(`Task queue ${taskQueueId}`);
  const [provisionerId, workerType] = taskQueueId.split('/');
  const valid = Boolean(provisionerId && workerType) && taskQueueId.split('/').length === 2;
  const loaded = useAsync(async (signal) => {
    if (!valid) return null;
    const path = segment(taskQueueId, true);
    const [counts, pending, claimed, workers] = await Promise.all([
      queue('GET', `/task-queues/${path}/counts`, { signal }),
      listAll('queue', `/task-queues/${path}/pending`, 'tasks', { signal, maxItems: 1000 }).catch((error) => ({ error })),
      listAll('queue', `/task-queues/${path}/claimed`, 'tasks', { signal, maxItems: 1000 }).catch((error) => ({ error })),
      listAll('queue', `/provisioners/${segment(provisionerId)}/worker-types/${segment(workerType)}/workers`, 'workers', { signal })
        .catch((error) => ({ error })),
    ]);
    return { counts, pending, claimed, workers };
  }, [taskQueueId]);

  if (!valid) {
    return (
      <>
        <h1>Task queue {taskQueueId}</h1>
        <Message><code>{taskQueueId}</code> is not a task queue id: it reads <code>provisionerId/workerType</code>.</Message>
      </>
    );
  }
  const data = loaded.data;
  return (
    <>
      <h1>Task queue {taskQueueId}</h1>
      {loaded.error ? <Message error={loaded.error} /> : !data ? <Loading /> : (
        <>
          <div data-testid="queue-row" data-task-queue-id={taskQueueId}>
            <dl class="facts">
              <div><dt>Pending</dt><dd data-testid="pending">{data.counts.pendingTasks}</dd></div>
              <div><dt>Claimed</dt><dd data-testid="claimed">{data.counts.claimedTasks}</dd></div>
              <div><dt>Oldest pending</dt><dd>
                {data.pending.error ? 'unknown'
                  : data.pending.length === 0 ? '—'
                    : formatAge(data.pending.map((entry) => entry.inserted).sort()[0])}
              </dd></div>
            </dl>
            <button type="button" onClick={loaded.reload}>Refresh</button>
          </div>
          <section aria-labelledby="workers-title">
            <h2 id="workers-title">Workers</h2>
            {data.workers.error ? <Message error={data.workers.error} />
              : <Workers taskQueueId={taskQueueId} workers={data.workers} claimed={data.claimed.error ? [] : data.claimed} onChange={loaded.reload} />}
          </section>
          <section aria-labelledby="claimed-title">
            <h2 id="claimed-title">Claimed tasks</h2>
            {data.claimed.error ? <Message error={data.claimed.error} /> : <TaskList entries={data.claimed} empty="No claimed tasks." />}
          </section>
          <section aria-labelledby="pending-title">
            <h2 id="pending-title">Pending tasks</h2>
            {data.pending.error ? <Message error={data.pending.error} /> : <TaskList entries={data.pending} empty="No pending tasks." />}
          </section>
        </>
      )}
    </>
  );
}

function TaskList({ entries, empty }) {
  if (entries.length === 0) return <p>{empty}</p>;
  return (
    <ul class="task-list">
      {entries.map((entry) => (
        <li key={`${entry.taskId}-${entry.runId}`}>
          <a href={`/tasks/${entry.taskId}?runId=${entry.runId}`}>{entry.task?.metadata?.name ?? entry.taskId}</a>
          <span class="meta">
            run {entry.runId}
            {entry.workerId ? ` on ${entry.workerGroup}/${entry.workerId}` : ''}
            {entry.inserted && <> · pending since <Time value={entry.inserted} /></>}
            {entry.claimed && <> · claimed <Time value={entry.claimed} /></>}
          </span>
        </li>
      ))}
    </ul>
  );
}

function Workers({ taskQueueId, workers, claimed, onChange }) {
  const { credentials, scopes } = useSession();
  if (workers.length === 0) return <p>No workers have claimed from this queue recently.</p>;
  const running = (worker) => claimed.filter((entry) => entry.workerGroup === worker.workerGroup && entry.workerId === worker.workerId);
  return (
    <table class="table">
      <thead>
        <tr><th scope="col">Worker</th><th scope="col">Last seen</th><th scope="col">Running tasks</th>
          <th scope="col">Quarantine</th></tr>
      </thead>
      <tbody>
        {workers.map((worker) => {
          const mayQuarantine = Boolean(credentials) &&
            satisfies(scopes, required.quarantine(taskQueueId, worker.workerGroup, worker.workerId));
          const tasks = running(worker);
          return (
            <tr key={`${worker.workerGroup}/${worker.workerId}`} data-testid="worker-row" data-worker-id={worker.workerId}>
              <th scope="row">{worker.workerGroup}/{worker.workerId}</th>
              <td><Time value={worker.lastDateActive} /></td>
              <td>
                {tasks.length === 0 ? (worker.latestTask ? <>none (latest <a href={`/tasks/${worker.latestTask.taskId}`}>{worker.latestTask.taskId}</a>)</> : 'none')
                  : tasks.map((entry) => <a key={entry.taskId} class="chip" href={`/tasks/${entry.taskId}?runId=${entry.runId}`}>{entry.task?.metadata?.name ?? entry.taskId}</a>)}
              </td>
              <td>
                {worker.quarantineUntil ? <>until <Time value={worker.quarantineUntil} /></> : 'no'}
                {mayQuarantine && <Quarantine taskQueueId={taskQueueId} worker={worker} onChange={onChange} />}
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

const QUARANTINE_HOURS = [['1', '1 hour'], ['24', '1 day'], ['168', '1 week'], ['0', 'lift the quarantine']];

function Quarantine({ taskQueueId, worker, onChange }) {
  const [open, setOpen] = useState(false);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  async function submit(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const hours = Number(form.elements.hours.value);
    const [provisionerId, workerType] = taskQueueId.split('/');
    setBusy(true);
    setError(null);
    try {
      await queue('PUT', `/provisioners/${segment(provisionerId)}/worker-types/${segment(workerType)}/workers/${segment(worker.workerGroup)}/${segment(worker.workerId)}`, {
        body: {
          quarantineUntil: new Date(Date.now() + hours * 3600 * 1000).toISOString(),
          quarantineInfo: form.elements.reason.value,
        },
      });
      setOpen(false);
      onChange();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  }

  return (
    <>
      {' '}
      <button type="button" data-action="quarantine" aria-expanded={open ? 'true' : 'false'}
        onClick={() => setOpen(!open)}>Quarantine…</button>
      {open && (
        <form class="inline-form" onSubmit={submit}>
          <label>For
            <select name="hours">{QUARANTINE_HOURS.map(([value, label]) => <option key={value} value={value}>{label}</option>)}</select>
          </label>
          <label>Reason <input name="reason" maxLength={4000} /></label>
          <button type="submit" disabled={busy}>Apply</button>
          {error && <Message error={error} />}
        </form>
      )}
    </>
  );
}
