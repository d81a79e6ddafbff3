// Hooks: the hook groups, a group's hooks, and a hook with its status and last fires.

import { ApiError, listAll, request, segment } from '../lib/api.js';
import { useAsync, useTitle } from '../lib/hooks.js';
import { pagePath } from '../lib/router.js';
import { Json } from '../components/Json.jsx';
import { Loading, Message } from '../components/Message.jsx';
import { Time } from '../components/Time.jsx';

export function HookGroupsPage() {
  useTitle('Hooks');
  const loaded = useAsync(async (signal) => {
    const { groups } = await request('hooks', 'GET', '/hooks', { signal });
    const hooks = await Promise.all(groups.map((group) =>
      request('hooks', 'GET', `/hooks/${segment(group)}`, { signal }).then((answer) => answer.hooks)));
    return groups.map((group, i) => ({ group, hooks: hooks[i] }));
  }, []);
  return (
    <>
      <h1>Hooks</h1>
      {loaded.error ? <Message error={loaded.error} /> : !loaded.data ? <Loading />
        : loaded.data.length === 0 ? <Message>No hooks yet.</Message> : loaded.data.map(({ group, hooks }) => (
          <section key={group} aria-label={`Hook group ${group}`}>
            <h2><a href={pagePath('hooks', group)}>{group}</a></h2>
            <HookList hooks={hooks} />
          </section>
        ))}
    </>
  );
}

function HookList({ hooks }) {
  return (
    <ul class="plain-list">
      {hooks.map((hook) => (
        <li key={hook.hookId}>
          <a href={pagePath('hooks', hook.hookGroupId, hook.hookId)}>{hook.hookId}</a>
          {hook.metadata?.name && <span class="meta"> {hook.metadata.name}</span>}
        </li>
      ))}
    </ul>
  );
}

export function HookGroupPage({ params: [hookGroupId] }) {
  useTitle(`Hooks of ${hookGroupId}`);
  const loaded = useAsync((signal) => request('hooks', 'GET', `/hooks/${segment(hookGroupId)}`, { signal }), [hookGroupId]);
  return (
    <>
      <h1>Hook group {hookGroupId}</h1>
      {loaded.error ? <Message error={loaded.error} /> : !loaded.data ? <Loading />
        : loaded.data.hooks.length === 0 ? <Message>The group <code>{hookGroupId}</code> has no hooks.</Message>
          : <HookList hooks={loaded.data.hooks} />}
    </>
  );
}

export function HookPage({ params: [hookGroupId, hookId] }) {
  useTitle(`Hook ${hookGroupId}/${hookId}`);
  const base = `/hooks/${segment(hookGroupId)}/${segment(hookId, true)}`;
  const loaded = useAsync((signal) => Promise.all([
    request('hooks', 'GET', base, { signal }),
    request('hooks', 'GET', `${base}/status`, { signal }).catch((error) => ({ error })),
    // A hook that never fired has no last fires: a 404, not an error.
    listAll('hooks', `${base}/last-fires`, 'lastFires', { signal, maxItems: 100 })
      .catch((error) => (error instanceof ApiError && error.status === 404 ? [] : { error })),
  ]), [hookGroupId, hookId]);

  if (loaded.error) return <><h1>Hook {hookGroupId}/{hookId}</h1><Message error={loaded.error} /></>;
  if (!loaded.data) return <><h1>Hook {hookGroupId}/{hookId}</h1><Loading /></>;
  const [hook, status, fires] = loaded.data;
  return (
    <>
      <h1>Hook {hookGroupId}/{hookId}</h1>
      {hook.metadata?.description && <p class="description">{hook.metadata.description}</p>}
      <dl class="facts">
        <div><dt>Name</dt><dd>{hook.metadata?.name}</dd></div>
        <div><dt>Owner</dt><dd>{hook.metadata?.owner}</dd></div>
        <div><dt>Schedule</dt><dd>{hook.schedule?.length ? hook.schedule.join(', ') : 'none'}</dd></div>
        {status.error ? null : (
          <>
            <div><dt>Last fire</dt><dd>{status.lastFire?.result}{status.lastFire?.taskId && <> — <a href={`/tasks/${status.lastFire.taskId}`}>{status.lastFire.taskId}</a></>}</dd></div>
            {status.nextScheduledDate && <div><dt>Next fire</dt><dd><Time value={status.nextScheduledDate} /></dd></div>}
          </>
        )}
      </dl>
      <section aria-labelledby="fires-title">
        <h2 id="fires-title">Last fires</h2>
        {fires.error ? <Message error={fires.error} /> : fires.length === 0 ? <p>Never fired.</p> : (
          <table class="table">
            <thead><tr><th scope="col">Fired</th><th scope="col">By</th><th scope="col">Result</th><th scope="col">Task</th></tr></thead>
            <tbody>
              {fires.map((fire) => (
                <tr key={fire.taskId}>
                  <td><Time value={fire.taskCreateTime} /></td>
                  <td>{fire.firedBy}</td>
                  <td>{fire.result}{fire.error ? `: ${fire.error}` : ''}</td>
                  <td><a href={`/tasks/${fire.taskId}`}>{fire.taskId}</a></td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <section aria-labelledby="hook-definition-title">
        <h2 id="hook-definition-title">Definition</h2>
        <Json value={hook} label="Hook definition" />
      </section>
    </>
  );
}
