// The index: a namespace's child namespaces and the tasks indexed directly in it.

import { listAll, segment } from '../lib/api.js';
import { useAsync, useTitle } from '../lib/hooks.js';
import { pagePath } from '../lib/router.js';
import { Json } from '../components/Json.jsx';
import { Loading, Message } from '../components/Message.jsx';
import { Time } from '../components/Time.jsx';

export function IndexPage({ params: [namespace = ''] }) {
  useTitle(namespace ? `Index ${namespace}` : 'Index');
  const path = namespace ? `/${segment(namespace)}` : '';
  const loaded = useAsync((signal) => Promise.all([
    listAll('index', `/namespaces${path}`, 'namespaces', { signal, maxItems: 5000 }),
    namespace ? listAll('index', `/tasks${path}`, 'tasks', { signal, maxItems: 5000 }) : Promise.resolve([]),
  ]), [namespace]);

  const parts = namespace ? namespace.split('.') : [];
  return (
    <>
      <h1>{namespace ? `Index: ${namespace}` : 'Index'}</h1>
      <nav aria-label="Namespace path" class="breadcrumbs">
        <a href="/index">index</a>
        {parts.map((part, i) => (
          <span key={i}> . <a href={pagePath('index', parts.slice(0, i + 1).join('.'))}>{part}</a></span>
        ))}
      </nav>
      {loaded.error ? <Message error={loaded.error} /> : !loaded.data ? <Loading /> : (
        <IndexListing namespace={namespace} namespaces={loaded.data[0]} tasks={loaded.data[1]} />
      )}
    </>
  );
}

function IndexListing({ namespace, namespaces, tasks }) {
  if (namespaces.length === 0 && tasks.length === 0) {
    return <Message>{namespace ? <>Nothing is indexed under <code>{namespace}</code>.</> : 'The index is empty.'}</Message>;
  }
  return (
    <>
      {namespaces.length > 0 && (
        <section aria-labelledby="namespaces-title">
          <h2 id="namespaces-title">Namespaces</h2>
          <ul class="plain-list">
            {namespaces.map((entry) => (
              <li key={entry.namespace}><a href={pagePath('index', entry.namespace)}>{entry.name}</a>
                <span class="meta"> expires <Time value={entry.expires} /></span></li>
            ))}
          </ul>
        </section>
      )}
      {tasks.length > 0 && (
        <section aria-labelledby="indexed-title">
          <h2 id="indexed-title">Indexed tasks</h2>
          <ul class="plain-list">
            {tasks.map((entry) => (
              <li key={entry.namespace}>
                <code>{entry.namespace}</code> → <a href={`/tasks/${entry.taskId}`}>{entry.taskId}</a>
                <span class="meta"> rank {entry.rank} · expires <Time value={entry.expires} /></span>
                {entry.data && Object.keys(entry.data).length > 0 && <Json value={entry.data} label={`Data of ${entry.namespace}`} />}
              </li>
            ))}
          </ul>
        </section>
      )}
    </>
  );
}
