// A Pulse listener as taskcluster-client's documentation writes one: bindings from the
// official client's `QueueEvents` (`taskCompleted({taskId})`, and a CC route as a routing-key
// pattern), consumed from the AMQP broker Taskfold publishes to with Taskcluster's own consumer,
// `consume()` of npm `taskcluster-lib-pulse` (the library Taskcluster's services use, published
// there under that name), on a durable queue that outlives connections.
//
// Run by tests/python/test_pulse.py: the broker's URL in `TASKFOLD_AMQP_URL`, the tasks to bind
// by id (comma-separated) in `TASKFOLD_PULSE_TASK_IDS`, the route in `TASKFOLD_PULSE_ROUTE`, the
// queue's name in `TASKFOLD_PULSE_QUEUE`. Prints `ready` once the queue is bound, then each
// message as one JSON line of the fields a listener gets; stops when its standard input closes.

import assert from 'node:assert/strict';
import {createRequire} from 'node:module';
import path from 'node:path';

import {rootUrl, taskcluster} from './setup.mjs';

const require = createRequire(path.join(process.env.TASKFOLD_NODE_MODULES, 'noop.js'));
const pulse = require('taskcluster-lib-pulse');

const amqpUrl = process.env.TASKFOLD_AMQP_URL;
const taskIds = process.env.TASKFOLD_PULSE_TASK_IDS.split(',');
const route = process.env.TASKFOLD_PULSE_ROUTE;
const queueName = process.env.TASKFOLD_PULSE_QUEUE;
assert.ok(amqpUrl && taskIds.length && route && queueName, 'the test names the broker and bindings');

// When the broker goes away, this version of the library cancels the consumer on the channel the
// broker already closed while retiring the connection, and leaves the rejection unhandled (its
// own comments say such errors are to be ignored); Node would exit on it.
process.on('unhandledRejection', error => console.error(`ignored: ${error}`));

const queueEvents = new taskcluster.QueueEvents({rootUrl});
const bindings = [
  ...taskIds.map(taskId => queueEvents.taskCompleted({taskId})),
  queueEvents.taskCompleted(`route.${route}`),
];
assert.equal(bindings[0].exchange, 'exchange/taskcluster-queue/v1/task-completed');

const client = new pulse.Client({
  namespace: 'taskfold-tests',
  credentials: pulse.connectionStringCredentials(amqpUrl),
  // Only errors are reported to it.
  monitor: {reportError: error => console.error(`pulse: ${error}`)},
  // The test restarts the broker: come back quickly.
  minReconnectionInterval: 200,
});

const consumer = await pulse.consume({client, bindings, queueName},
  async ({payload, exchange, routingKey, routes}) => {
    console.log(JSON.stringify({exchange, routingKey, routes, payload}));
  });
console.log('ready');

process.stdin.resume();
process.stdin.on('end', async () => {
  await consumer.stop();
  // Not `client.stop()`: it holds a retired connection open for 30 s first.
  process.exit(0);
});
