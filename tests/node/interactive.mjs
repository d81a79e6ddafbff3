// docker-worker's interactive tutorial, its three code blocks as they are written, against a real
// `taskfold serve` and `taskfold worker --engine docker`: the official Node client creates a task
// with `features.interactive`, signs a URL of `private/docker-worker/interactive.sock`, gets it
// without following the redirect, and `DockerExecClient` (npm docker-exec-websocket-server@1.4.0)
// connects to the websocket URL the redirect names: `ls` lists the container's directory, and the
// shell's exit code arrives. Then: the URL is single-use (a second connection is refused with
// 401), and each GET of the artifact mints a new one. Run by
// tests/python/test_interactive_protocols.py, which starts the server and the worker and names
// the worker's task queue in `TASKFOLD_TASK_QUEUE_ID` and the image in `TASKFOLD_TEST_IMAGE`.
// Exits non-zero, naming the step, at the first thing that is not as the tutorial says.

import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import {createRequire} from 'node:module';
import path from 'node:path';

import {credentials, rootUrl, slugid, taskcluster} from './setup.mjs';

const require = createRequire(path.join(process.env.TASKFOLD_NODE_MODULES, 'noop.js'));
const {DockerExecClient} = require('docker-exec-websocket-server');

const taskQueueId = process.env.TASKFOLD_TASK_QUEUE_ID;
const image = process.env.TASKFOLD_TEST_IMAGE;
assert.ok(taskQueueId && image, 'TASKFOLD_TASK_QUEUE_ID and TASKFOLD_TEST_IMAGE are set');

// Nothing here may take long; a hang is a failure with what was seen so far.
const output = [];
const watchdog = setTimeout(() => {
  console.log(`timed out; the shell's output so far: ${JSON.stringify(output.join(''))}`);
  process.exit(1);
}, 100_000);

function step(name) {
  console.log(`step: ${name}`);
}

// The GET the tutorial makes with redirects disabled: status and `Location`.
function getWithoutRedirect(url) {
  const get = url.startsWith('https:') ? https.get : http.get;
  return new Promise((resolve, reject) => {
    get(url, response => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', chunk => { body += chunk; });
      response.on('end', () => resolve({
        status: response.statusCode, location: response.headers.location, body,
      }));
    }).on('error', reject);
  });
}

// --- 1. a task with an interactive shell ----------------------------------------------------

step('createTask with features.interactive');
const queue = new taskcluster.Queue({rootUrl, credentials});
const taskId = slugid.nice();
await queue.createTask(taskId, {
  taskQueueId,
  created: new Date().toJSON(),
  deadline: taskcluster.fromNowJSON('1 hour'),
  payload: {
    image,
    command: ['sh', '-c', 'echo made > made-by-the-task.txt; sleep 90'],
    maxRunTime: 120,
    features: {interactive: true},
  },
  metadata: {name: 'interactive tutorial', description: 'docker-worker\'s interactive tutorial',
    owner: 'tests@example.com', source: 'https://example.com/taskfold/tests/node'},
});
console.log(`taskId ${taskId}`);

// --- 2. the websocket URL, from the signed artifact URL ---------------------------------------

step('getLatestArtifact of private/docker-worker/interactive.sock, redirects disabled');
const url = queue.buildSignedUrl(
  queue.getLatestArtifact, taskId, 'private/docker-worker/interactive.sock',
  {expiration: 60 * 5});
// The artifact exists once the worker runs the task: until then, 404.
let answer;
for (let attempt = 0; attempt < 120; attempt++) {
  answer = await getWithoutRedirect(url);
  if (answer.status !== 404) break;
  await new Promise(resolve => setTimeout(resolve, 500));
}
assert.equal(answer.status, 303, `getLatestArtifact answered ${answer.status}: ${answer.body}`);
const socketUrl = answer.location;
const wsScheme = rootUrl.startsWith('https:') ? 'wss://' : 'ws://';
assert.ok(socketUrl.startsWith(wsScheme), `Location ${socketUrl} is not a ${wsScheme} URL`);
assert.ok(!socketUrl.includes('?'), `Location ${socketUrl} has a query`);
console.log(`Location ${socketUrl.replace(/[^/]+$/, '<ticket>')}`);

// --- 3. the shell ------------------------------------------------------------------------------

step('DockerExecClient: execute, ls, exit');
const client = new DockerExecClient({url: socketUrl, tty: true, command: 'sh'});
await client.execute();
const exited = new Promise(resolve => client.on('exit', resolve));
client.stdout.on('data', data => output.push(data.toString('utf8')));
client.stdin.write('ls\n');
// `made-by-the-task.txt` as `ls` lists it, not as the echoed command line (which has no `.txt`).
while (!/made-by-the-task\.txt/.test(output.join(''))) {
  await new Promise(resolve => setTimeout(resolve, 100));
}
console.log(`ls: ${JSON.stringify(output.join(''))}`);
client.stdin.write('exit 7\n');
const code = await exited;
assert.equal(code, 7, `exit code ${code}`);
console.log(`exit code ${code}`);

// --- the URL is single-use; every GET mints a new one ----------------------------------------

step('a second connection with the same URL is refused');
const again = new DockerExecClient({url: socketUrl, tty: true, command: 'sh'});
await assert.rejects(again.execute(), error => {
  assert.match(String(error.message), /401/, String(error));
  return true;
});

step('each GET of the artifact mints a new URL');
const second = await getWithoutRedirect(url);
assert.equal(second.status, 303, second.body);
assert.notEqual(second.location, socketUrl);
const other = new DockerExecClient({url: second.location, tty: false, command: ['echo', 'fresh-url']});
await other.execute();
const otherOutput = [];
other.stdout.on('data', data => otherOutput.push(data.toString('utf8')));
const otherCode = await new Promise(resolve => other.on('exit', resolve));
assert.equal(otherCode, 0);
assert.equal(otherOutput.join(''), 'fresh-url\n');

await queue.cancelTask(taskId);
clearTimeout(watchdog);
console.log('the interactive tutorial works as written');
