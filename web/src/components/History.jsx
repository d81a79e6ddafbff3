// A task's history from the event log (GET task/<id>/history): every event, who caused it,
// and where the log holds it.

import { Time } from './Time.jsx';

function details(event) {
  const parts = [];
  if (event.runId !== undefined) parts.push(`run ${event.runId}`);
  if (event.reasonCreated) parts.push(event.reasonCreated);
  if (event.reasonResolved) parts.push(event.reasonResolved);
  if (event.workerId) parts.push(`worker ${event.workerGroup}/${event.workerId}`);
  if (event.priority) parts.push(`priority ${event.priority}`);
  if (event.name) parts.push(event.name);
  if (event.sessionId) parts.push(`session ${event.sessionId}`);
  return parts.join(' · ');
}

export function History({ events }) {
  if (events.length === 0) return <p>No events.</p>;
  return (
    <ol class="history">
      {events.map((event) => (
        <li key={`${event.partition}-${event.offset}`} data-testid="history-event" data-kind={event.kind}>
          <Time value={event.time} />
          <span class="history-kind">{event.kind}</span>
          {event.dependency && <a href={`/tasks/${event.dependency}`}>{event.dependency}</a>}
          <span class="history-details">{details(event)}</span>
          <span class="history-client">{event.clientId ? `by ${event.clientId}` : 'by the queue'}</span>
          <span class="history-place" title="partition/offset in the event log">{event.partition}/{event.offset}</span>
        </li>
      ))}
    </ol>
  );
}
