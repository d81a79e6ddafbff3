// The start page: one search box for a taskId, a task group id or an index path, and the
// most recent task groups.

import { useState } from 'preact/hooks';
import { ApiError, queue, request, segment } from '../lib/api.js';
import { useAsync, useTitle } from '../lib/hooks.js';
import { navigate, pagePath } from '../lib/router.js';
import { isSlugid } from '../lib/slugid.js';
import { Loading, Message } from '../components/Message.jsx';
import { Time } from '../components/Time.jsx';

const isNotFound = (error) => error instanceof ApiError && error.status === 404;

// Where a search leads: a task, a task group with tasks, an indexed task, or a namespace.
async function destination(q) {
  if (isSlugid(q)) {
    try {
      await queue('GET', `/task/${q}`);
      return `/tasks/${q}`;
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    try {
      const page = await queue('GET', `/task-group/${q}/list`, { query: { limit: 1 } });
      if (page.tasks?.length > 0) return `/groups/${q}`;
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    throw new Error(`No task or task group has the id ${q}.`);
  }
  try {
    const found = await request('index', 'GET', `/task/${segment(q)}`);
    return `/tasks/${found.taskId}`;
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  return pagePath('index', q);
}

function Search() {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  async function submit(event) {
    event.preventDefault();
    const q = event.currentTarget.elements.q.value.trim();
    if (!q) return;
    setBusy(true);
    setError(null);
    try {
      navigate(await destination(q));
    } catch (failure) {
      setError(failure);
      setBusy(false);
    }
  }

  return (
    <form class="search" role="search" onSubmit={submit}>
      <label for="home-search">Task ID, task group ID or index path</label>
      <div class="search-row">
        <input id="home-search" name="q" type="search" required spellcheck={false}
          placeholder="fN1SbArXTPSVFNUvaOlinQ or project.main.latest" />
        <button type="submit" disabled={busy}>{busy ? 'Looking…' : 'Go'}</button>
      </div>
      {error && <Message error={error} />}
    </form>
  );
}

function RecentGroups() {
  const recent = useAsync(async (signal) => {
    try {
      return (await queue('GET', '/task-groups', { query: { limit: 20 }, signal })).taskGroups ?? [];
    } catch (error) {
      // Servers without the listing answer 404: there is nothing to show, not an error.
      if (isNotFound(error)) return [];
      throw error;
    }
  }, []);
  if (recent.loading) return <Loading />;
  if (recent.error) return <Message error={recent.error} />;
  if (recent.data.length === 0) return <p>No recent groups known.</p>;
  return (
    <ul class="recent-groups">
      {recent.data.map((group) => (
        <li key={group.taskGroupId}>
          <a data-testid="recent-group" href={`/groups/${group.taskGroupId}`}>{group.taskGroupId}</a>
          <span class="meta">
            scheduler {group.schedulerId}
            {group.created && <> · created <Time value={group.created} /></>}
            {group.taskCount !== undefined && ` · ${group.taskCount} tasks`}
            {group.unresolvedTasks !== undefined && ` · ${group.unresolvedTasks} unresolved`}
            {group.resolved && <> · resolved <Time value={group.resolved} /></>}
            {group.sealed && ' · sealed'}
          </span>
        </li>
      ))}
    </ul>
  );
}

export function HomePage() {
  useTitle('');
  return (
    <>
      <h1>Taskfold console</h1>
      <Search />
      <section aria-labelledby="recent-title">
        <h2 id="recent-title">Recent task groups</h2>
        <RecentGroups />
      </section>
    </>
  );
}
