// Live updates from the queue's exchanges over Server-Sent Events (src/api/events.rs,
// schemas/asyncapi.yaml): one EventSource per page, bound to the exchanges and routing-key
// patterns it cares about. Messages are handed on in batches, once per animation frame, so a
// burst of thousands of updates costs one render. EventSource reconnects by itself and resumes
// after the last cursor through Last-Event-ID.

import { serviceUrl } from './api.js';

export const TASK_EXCHANGES = [
  'task-defined', 'task-pending', 'task-running', 'artifact-created',
  'task-completed', 'task-failed', 'task-exception', 'task-priority-changed',
];

// A task routing key: primary.<taskId>.<runId>.<workerGroup>.<workerId>.<provisionerId>.
// <workerType>.<schedulerId>.<taskGroupId>._
export function taskKeyPattern({ taskId = '*', taskGroupId = '*' }) {
  return `primary.${taskId}.*.*.*.*.*.*.${taskGroupId}.*`;
}

// Listens until the returned function is called. `onBatch(messages)` gets the parsed
// listener events ({exchange, routingKey, payload, …}); `onState(text)` a line for the visitor
// when the stream drops or comes back.
export function listen(bindings, onBatch, onState = () => {}) {
  const url = new URL(serviceUrl('events', '/sse'));
  for (const { exchange, routingKeyPattern } of bindings) {
    url.searchParams.append('exchange', exchange);
    url.searchParams.append('routingKeyPattern', routingKeyPattern);
  }
  const source = new EventSource(url.href);
  let pending = [];
  let frame = 0;

  const flush = () => {
    frame = 0;
    const batch = pending;
    pending = [];
    if (batch.length > 0) onBatch(batch);
  };

  source.addEventListener('message', (event) => {
    try {
      pending.push(JSON.parse(event.data));
    } catch {
      return;
    }
    if (!frame) frame = requestAnimationFrame(flush);
  });
  // The server's own `error` event (this listener fell behind) has data; the browser's
  // (connection lost, it will retry) has none.
  source.addEventListener('error', (event) => {
    if (event.data) onState('Live updates fell behind and are reconnecting.');
    else if (source.readyState !== EventSource.OPEN) onState('Live updates interrupted, reconnecting…');
  });
  source.addEventListener('open', () => onState(''));

  return () => {
    source.close();
    if (frame) cancelAnimationFrame(frame);
  };
}
