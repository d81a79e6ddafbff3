// The official Node client (npm `taskcluster-client`) against a real `taskfold serve`: a task's
// life, an s3 artifact up and down, signed URLs, temporary credentials, authorizedScopes and
// Taskcluster's errors. Run by tests/python/test_node_client.py, which starts the server; the
// client comes from `TASKFOLD_NODE_MODULES` (tests/run.sh installs it there). Exits non-zero,
// naming the step, at the first thing that is not as Taskcluster would answer.

import assert from 'node:assert/strict';

import {credentials, refused, rootUrl, slugid, taskcluster} from './setup.mjs';

const queue = new taskcluster.Queue({rootUrl, credentials, retries: 0});
const taskQueueId = `node-interop/w${slugid.nice().slice(0, 8).toLowerCase().replace(/[^a-z0-9]/g, 'x')}`;

const taskId = slugid.nice();
const definition = {
  taskQueueId,
  created: new Date().toJSON(),
  deadline: taskcluster.fromNowJSON('1 hour'),
  routes: ['index.node.interop'],
  payload: {command: ['true']},
  metadata: {name: 'node', description: 'made by the Node client', owner: 'tests@example.com',
    source: 'https://example.com/taskfold/tests/node'},
};

// Create, idempotently; the same taskId with another definition is a conflict.
let status = (await queue.createTask(taskId, definition)).status;
assert.equal(status.state, 'pending');
assert.deepEqual((await queue.createTask(taskId, definition)).status, status);
await refused(queue.createTask(taskId, {...definition, routes: []}), 409, 'RequestConflict');
const task = await queue.task(taskId);
assert.equal(task.taskQueueId, taskQueueId);
assert.equal(task.priority, 'lowest');

// Claim, reclaim and work with the run's own credentials.
const {tasks: [claimed]} = await queue.claimWork(taskQueueId,
  {workerGroup: 'wg', workerId: 'w1', tasks: 1});
assert.equal(claimed.status.taskId, taskId);
assert.deepEqual(claimed.task, task);
const run = new taskcluster.Queue({rootUrl, credentials: claimed.credentials, retries: 0});
assert.equal((await run.reclaimTask(taskId, '0')).status.state, 'running');
const artifact = await run.createArtifact(taskId, '0', 'public/hello.txt', {
  storageType: 's3', contentType: 'text/plain', contentLength: 11,
  expires: taskcluster.fromNowJSON('1 day'),
});
const put = await fetch(artifact.putUrl, {
  method: 'PUT', body: 'hello, node', headers: {'Content-Type': 'text/plain'},
});
assert.equal(put.status, 200);
// The run's credentials are for this run only.
await refused(run.cancelTask(taskId), 403, 'InsufficientScopes');
status = (await run.reportCompleted(taskId, '0')).status;
assert.equal(status.state, 'completed');

// The artifact, anonymously (a public name) and through a signed URL.
const names = (await queue.listArtifacts(taskId, '0')).artifacts.map(a => a.name);
assert.deepEqual(names, ['public/hello.txt']);
let response = await fetch(queue.buildUrl(queue.getArtifact, taskId, '0', 'public/hello.txt'));
assert.equal(response.status, 200);
assert.equal(await response.text(), 'hello, node');
response = await fetch(queue.buildSignedUrl(queue.getLatestArtifact, taskId, 'public/hello.txt'));
assert.equal(await response.text(), 'hello, node');

// Temporary credentials and authorizedScopes hold a client to the scopes they name.
const temporary = taskcluster.createTemporaryCredentials({
  start: new Date(Date.now() - 60_000), expiry: new Date(Date.now() + 3_600_000),
  scopes: [`queue:rerun-task:*`], credentials,
});
const limited = new taskcluster.Queue({rootUrl, credentials: temporary, retries: 0});
await refused(limited.cancelTask(taskId), 403, 'InsufficientScopes');
const authorized = new taskcluster.Queue({rootUrl, credentials, retries: 0,
  authorizedScopes: ['queue:status:*']});
assert.equal((await authorized.status(taskId)).status.state, 'completed');
await refused(authorized.rerunTask(taskId), 403, 'InsufficientScopes');

// Groups, counts and errors.
assert.deepEqual((await queue.listTaskGroup(taskId)).tasks.map(t => t.status.taskId), [taskId]);
const counts = await queue.taskQueueCounts(taskQueueId);
assert.deepEqual([counts.pendingTasks, counts.claimedTasks], [0, 0]);
await refused(queue.task(slugid.nice()), 404, 'ResourceNotFound');
await refused(queue.status('not-a-slug'), 400, 'InvalidRequestArguments');
const wrong = new taskcluster.Queue({rootUrl, retries: 0,
  credentials: {clientId: credentials.clientId, accessToken: 'not-the-token'}});
await refused(wrong.cancelTask(taskId), 401, 'AuthenticationFailed');

console.log(`the Node client ${taskId}: every step as Taskcluster answers`);
