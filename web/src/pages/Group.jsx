// A task group: every task with its state, counts by state, a filter and a search, kept up
// to date by the group's exchange messages (no polling). The tasks live in a Map outside of
// Preact's state; a version number re-renders once per batch of messages, and the table is
// windowed, so a group of thousands of tasks stays responsive while updates stream in.

import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { ApiError, listAll, queue } from '../lib/api.js';
import { TASK_EXCHANGES, listen, taskKeyPattern } from '../lib/events.js';
import { useTitle } from '../lib/hooks.js';
import { required, satisfies } from '../lib/scopes.js';
import { useSession } from '../lib/session.js';
import { isSlugid } from '../lib/slugid.js';
import { isNewer } from '../lib/status.js';
import { Loading, Message } from '../components/Message.jsx';
import { State } from '../components/State.jsx';
import { Time } from '../components/Time.jsx';
import { VirtualList } from '../components/VirtualList.jsx';

const STATES = ['unscheduled', 'pending', 'running', 'completed', 'failed', 'exception'];
const ROW_HEIGHT = 36;
const NAME_BATCH = 100;
const BY_NAME = new Intl.Collator('en', { numeric: true });

function rowOf(status, name) {
  const runs = status.runs ?? [];
  const last = runs[runs.length - 1];
  return {
    taskId: status.taskId,
    name: name ?? null,
    state: status.state,
    status,
    runs: runs.length,
    changed: last?.resolved ?? last?.started ?? last?.scheduled ?? null,
  };
}

export function GroupPage({ params: [taskGroupId] }) {
  useTitle(`Task group ${taskGroupId}`);
  if (!isSlugid(taskGroupId)) {
    return (
      <>
        <h1>Task group {taskGroupId}</h1>
        <Message><code>{taskGroupId}</code> is not a valid taskGroupId: it is a 22-character slugid.</Message>
      </>
    );
  }
  return <GroupView taskGroupId={taskGroupId} />;
}

function GroupView({ taskGroupId }) {
  const tasks = useRef(new Map());
  const [version, setVersion] = useState(0);
  const [group, setGroup] = useState(null);
  const [listed, setListed] = useState(false);
  const [error, setError] = useState(null);
  const [liveState, setLiveState] = useState('');
  const [stateFilter, setStateFilter] = useState('all');
  const [search, setSearch] = useState('');

  useEffect(() => {
    tasks.current = new Map();
    const abort = new AbortController();
    const signal = abort.signal;
    // Messages that arrive before the listing are held back, then applied over it.
    let held = [];
    const missingNames = new Set();
    let naming = false;

    // Names of tasks first seen in a message, a batch at a time.
    async function fetchNames() {
      if (naming) return;
      naming = true;
      while (missingNames.size > 0 && !signal.aborted) {
        const batch = [...missingNames].slice(0, NAME_BATCH);
        batch.forEach((id) => missingNames.delete(id));
        try {
          const answer = await queue('POST', '/tasks', { body: { taskIds: batch }, signal });
          for (const { taskId, task } of answer.tasks) {
            const row = tasks.current.get(taskId);
            if (row) row.name = task.metadata?.name ?? null;
          }
          setVersion((n) => n + 1);
        } catch {
          break;  // names are a nicety; the rows stand without them
        }
      }
      naming = false;
    }

    function apply(messages) {
      for (const message of messages) {
        const status = message.payload?.status;
        if (status) {
          const row = tasks.current.get(status.taskId);
          if (!row) {
            tasks.current.set(status.taskId, rowOf(status, null));
            missingNames.add(status.taskId);
          } else if (isNewer(status, row.status)) {
            tasks.current.set(status.taskId, rowOf(status, row.name));
          }
        } else if (message.exchange.endsWith('task-group-sealed')) {
          queue('GET', `/task-group/${taskGroupId}`, { signal }).then(setGroup, () => {});
        }
      }
      setVersion((n) => n + 1);
      fetchNames();
    }

    const stop = listen(
      [
        ...TASK_EXCHANGES.filter((exchange) => exchange !== 'artifact-created')
          .map((exchange) => ({ exchange, routingKeyPattern: taskKeyPattern({ taskGroupId }) })),
        { exchange: 'task-group-sealed', routingKeyPattern: `primary.${taskGroupId}.*.*` },
      ],
      (messages) => { if (held) held.push(...messages); else apply(messages); },
      setLiveState,
    );

    queue('GET', `/task-group/${taskGroupId}`, { signal })
      .then((info) => {
        setGroup(info);
        return listAll('queue', `/task-group/${taskGroupId}/list`, 'tasks', {
          signal,
          query: { limit: 1000 },
          onPage(entries) {
            for (const { status, task } of entries) {
              const known = tasks.current.get(status.taskId);
              if (!known || isNewer(status, known.status)) {
                tasks.current.set(status.taskId, rowOf(status, task.metadata?.name));
              }
            }
            setVersion((n) => n + 1);
          },
        });
      })
      .then(() => {
        const waiting = held;
        held = null;
        apply(waiting);
        setListed(true);
      })
      .catch((failure) => { if (failure.name !== 'AbortError') setError(failure); });

    return () => { abort.abort(); stop(); };
  }, [taskGroupId]);

  // By name, numbers in names compared as numbers ("task 9" before "task 10").
  const all = useMemo(
    () => [...tasks.current.values()].sort((a, b) =>
      BY_NAME.compare(a.name ?? a.taskId, b.name ?? b.taskId) || BY_NAME.compare(a.taskId, b.taskId)),
    [version],
  );
  const counts = useMemo(() => {
    const result = Object.fromEntries(STATES.map((state) => [state, 0]));
    for (const row of all) result[row.state] = (result[row.state] ?? 0) + 1;
    return result;
  }, [all]);
  const shown = useMemo(() => {
    const needle = search.trim().toLowerCase();
    return all.filter((row) => (stateFilter === 'all' || row.state === stateFilter) &&
      (!needle || row.taskId.toLowerCase().includes(needle) || (row.name ?? '').toLowerCase().includes(needle)));
  }, [all, stateFilter, search]);

  if (error) {
    const notFound = error instanceof ApiError && error.status === 404;
    return (
      <>
        <h1>Task group {taskGroupId}</h1>
        {notFound
          ? <Message>Task group <code>{taskGroupId}</code> has no tasks: it was never created, or its tasks expired.</Message>
          : <Message error={error} />}
      </>
    );
  }

  return (
    <>
      <h1>Task group {taskGroupId}</h1>
      {liveState && <p class="notice" role="status">{liveState}</p>}
      {group && (
        <dl class="facts">
          <div><dt>Scheduler</dt><dd>{group.schedulerId}</dd></div>
          <div><dt>Sealed</dt><dd>{group.sealed ? <Time value={group.sealed} /> : 'no'}</dd></div>
          <div><dt>Expires</dt><dd><Time value={group.expires} /></dd></div>
        </dl>
      )}
      {group && <GroupActions group={group} onGroup={setGroup} />}
      <ul class="counts" aria-label="Tasks by state">
        <li><span class="count" data-testid="group-count" data-state="total">{all.length}</span> total</li>
        {STATES.map((state) => (
          <li key={state} class={`count-${state}`}>
            <span class="count" data-testid="group-count" data-state={state}>{counts[state]}</span> {state}
          </li>
        ))}
      </ul>
      {!listed && <Loading what={`Loading tasks (${all.length} so far)`} />}
      {listed && all.length === 0 && <Message>Task group <code>{taskGroupId}</code> has no tasks.</Message>}
      <div class="filters">
        <label>State
          <select name="state" value={stateFilter} onChange={(event) => setStateFilter(event.currentTarget.value)}>
            <option value="all">all</option>
            {STATES.map((state) => <option key={state} value={state}>{state}</option>)}
          </select>
        </label>
        <label>Search
          <input type="search" name="search" value={search} placeholder="name or taskId"
            onInput={(event) => setSearch(event.currentTarget.value)} />
        </label>
        <span role="status" class="shown-count">{shown.length} of {all.length} shown</span>
      </div>
      <GroupTable rows={shown} />
    </>
  );
}

function GroupTable({ rows }) {
  return (
    <div class="group-table" role="table" aria-label="Tasks" aria-rowcount={rows.length + 1}>
      <div class="group-row group-head" role="row">
        <span role="columnheader">Task</span>
        <span role="columnheader">State</span>
        <span role="columnheader" class="col-runs">Runs</span>
        <span role="columnheader" class="col-changed">Last change</span>
      </div>
      <VirtualList
        count={rows.length}
        rowHeight={ROW_HEIGHT}
        class="group-body"
        style={{ height: `min(70vh, 36rem, ${Math.max(1, rows.length) * ROW_HEIGHT + 2}px)` }}
        role="rowgroup"
        renderRow={(index) => {
          const row = rows[index];
          return (
            <div key={row.taskId} class="group-row" role="row" aria-rowindex={index + 2}
              data-testid="group-row" data-task-id={row.taskId} data-state={row.state}>
              <span role="cell" class="col-name">
                <a href={`/tasks/${row.taskId}`}>{row.name ?? row.taskId}</a>
                {row.name && <code class="col-id">{row.taskId}</code>}
              </span>
              <span role="cell"><State state={row.state} /></span>
              <span role="cell" class="col-runs">{row.runs}</span>
              <span role="cell" class="col-changed"><Time value={row.changed} /></span>
            </div>
          );
        }}
      />
    </div>
  );
}

function GroupActions({ group, onGroup }) {
  const { credentials, scopes } = useSession();
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState(null);
  if (!credentials || !scopes) return null;
  const maySeal = satisfies(scopes, required.sealGroup(group));
  const mayCancel = satisfies(scopes, required.cancelGroup(group));
  if (!maySeal && !mayCancel) return null;

  async function act(action) {
    setBusy(true);
    setResult(null);
    try {
      const answer = await queue('POST', `/task-group/${group.taskGroupId}/${action}`);
      if (action === 'seal') {
        onGroup(answer);
        setResult({ ok: 'The group is sealed: no task can join it any more.' });
      } else {
        setResult({ ok: `Cancelled ${answer.cancelledCount} of the group's ${answer.taskGroupSize} tasks.` });
      }
    } catch (error) {
      setResult({ error });
    } finally {
      setBusy(false);
    }
  }

  return (
    <section class="actions" aria-label="Group actions">
      <div class="buttons">
        {maySeal && (
          <button type="button" data-action="seal" disabled={busy || Boolean(group.sealed)}
            onClick={() => act('seal')}>{group.sealed ? 'Sealed' : 'Seal group'}</button>
        )}
        {mayCancel && (
          <button type="button" data-action="cancel-group" disabled={busy}
            title={group.sealed ? 'Cancel every unresolved task' : 'The group must be sealed first'}
            onClick={() => act('cancel')}>Cancel group</button>
        )}
      </div>
      {result?.ok && <p class="notice" role="status">{result.ok}</p>}
      {result?.error && <Message error={result.error} />}
    </section>
  );
}
