// The official Node client (npm `taskcluster-client`) against the services beside the queue
// of a real `taskfold serve`: every method of Auth (but the cloud-credential ones), Secrets,
// Index and Hooks. Run by tests/python/test_node_client.py with root credentials; exits non-zero,
// naming the step, at the first answer that is not as Taskcluster's would be.

import assert from 'node:assert/strict';

import {credentials, refused, rootUrl, slugid, taskcluster} from './setup.mjs';

const options = {rootUrl, credentials, retries: 0};
const auth = new taskcluster.Auth(options);
const secrets = new taskcluster.Secrets(options);
const index = new taskcluster.Index(options);
const unique = slugid.nice().slice(0, 10).replace(/[^a-zA-Z0-9]/g, 'x');
const expires = taskcluster.fromNowJSON('1 hour');

// Auth: a client and a role, and what they allow.
const clientId = `node/${unique}`;
const roleId = `node-role-${unique}`;
const made = await auth.createClient(clientId, {expires, description: 'node', scopes: [`assume:${roleId}`]});
assert.equal(made.clientId, clientId);
assert.ok(made.accessToken.length >= 22);
assert.equal((await auth.client(clientId)).accessToken, undefined);
const role = await auth.createRole(roleId, {description: 'r', scopes: [`secrets:get:node/${unique}/*`]});
assert.ok(role.expandedScopes.includes(`secrets:get:node/${unique}/*`));
assert.deepEqual((await auth.role(roleId)).scopes, [`secrets:get:node/${unique}/*`]);
assert.ok((await auth.listRoles()).some(r => r.roleId === roleId));
assert.ok((await auth.listRoleIds()).roleIds.includes(roleId));
assert.ok((await auth.listRoles2({limit: 1000})).roles.some(r => r.roleId === roleId));
assert.ok((await auth.listClients({prefix: 'node/'})).clients.some(c => c.clientId === clientId));
await auth.updateRole(roleId, {description: 'r2', scopes: [`secrets:get:node/${unique}/*`, 'x:y']});
await auth.updateClient(clientId, {expires, description: 'node2', scopes: [`assume:${roleId}`]});
assert.equal((await auth.client(clientId)).description, 'node2');
assert.deepEqual(await auth.expandScopes({scopes: [`assume:${roleId}`]}),
  {scopes: [`assume:${roleId}`, `secrets:get:node/${unique}/*`, 'x:y']});
assert.ok((await auth.currentScopes()).scopes.includes('*'));

// Secrets, read by the new client.
await secrets.set(`node/${unique}/s`, {secret: {v: 1}, expires});
assert.deepEqual((await secrets.get(`node/${unique}/s`)).secret, {v: 1});
assert.ok((await secrets.list()).secrets.includes(`node/${unique}/s`));
const theirs = new taskcluster.Secrets({rootUrl, retries: 0,
  credentials: {clientId, accessToken: made.accessToken}});
assert.deepEqual((await theirs.get(`node/${unique}/s`)).secret, {v: 1});
await refused(theirs.get(`node/other/s`), 403, 'InsufficientScopes');
await auth.disableClient(clientId);
await refused(theirs.get(`node/${unique}/s`), 401, 'AuthenticationFailed');
await auth.enableClient(clientId);
const reset = await auth.resetAccessToken(clientId);
await refused(theirs.get(`node/${unique}/s`), 401, 'AuthenticationFailed');
const renewed = new taskcluster.Secrets({rootUrl, retries: 0,
  credentials: {clientId, accessToken: reset.accessToken}});
assert.deepEqual((await renewed.get(`node/${unique}/s`)).secret, {v: 1});
await secrets.remove(`node/${unique}/s`);
await refused(secrets.get(`node/${unique}/s`), 404, 'ResourceNotFound');

// testAuthenticate, with the fixed tester client.
const tester = new taskcluster.Auth({rootUrl, retries: 0,
  credentials: {clientId: 'tester', accessToken: 'no-secret'}});
assert.equal((await tester.testAuthenticate({clientScopes: ['a:*'], requiredScopes: ['a:b']})).clientId, 'tester');
assert.equal((await tester.testAuthenticateGet()).clientId, 'tester');

// Index.
const taskId = slugid.nice();
const ns = `node${unique}`;
const inserted = await index.insertTask(`${ns}.a.latest`, {taskId, rank: 3, data: {x: 1}, expires});
assert.equal(inserted.taskId, taskId);
assert.equal((await index.findTask(`${ns}.a.latest`)).rank, 3);
assert.equal((await index.listTasks(`${ns}.a`)).tasks.length, 1);
assert.deepEqual((await index.listNamespaces(ns)).namespaces.map(n => n.name), ['a']);
assert.equal((await index.findTasksAtIndex({indexes: [`${ns}.a.latest`]})).tasks.length, 1);
await index.deleteTask(`${ns}.a.latest`);
await refused(index.findTask(`${ns}.a.latest`), 404, 'ResourceNotFound');

// Hooks: a hook whose role may create its task, fired by trigger and by token.
const hooks = new taskcluster.Hooks(options);
const group = `node${unique}`;
const taskQueueId = `node-interop/h${unique.slice(0, 8).toLowerCase().replace(/[^a-z0-9]/g, 'x')}`;
await auth.createRole(`hook-id:${group}/build`, {description: 'hook', scopes: [
  `queue:create-task:highest:${taskQueueId}`, 'queue:scheduler-id:-', 'queue:create-task:project:none']});
const hookBody = {
  metadata: {name: 'node', description: 'd', owner: 'node@example.com'},
  task: {taskQueueId, payload: {m: '${payload.m}'},
    metadata: {name: 'n', description: 'd', owner: 'node@example.com', source: 'https://example.com'}},
  triggerSchema: {type: 'object'},
};
assert.equal((await hooks.createHook(group, 'build', hookBody)).hookId, 'build');
assert.equal((await hooks.hook(group, 'build')).hookGroupId, group);
await hooks.updateHook(group, 'build', {...hookBody, schedule: ['0 0 * * *']});
assert.equal((await hooks.listHooks(group)).hooks.length, 1);
assert.ok((await hooks.listHookGroups()).groups.includes(group));
const fired = await hooks.triggerHook(group, 'build', {m: 'node'});
const firedTask = await new taskcluster.Queue(options).task(fired.taskId);
assert.deepEqual(firedTask.payload, {m: 'node'});
const {token} = await hooks.getTriggerToken(group, 'build');
assert.ok((await hooks.triggerHookWithToken(group, 'build', token, {m: 't'})).taskId);
const {token: newToken} = await hooks.resetTriggerToken(group, 'build');
assert.notEqual(newToken, token);
await refused(hooks.triggerHookWithToken(group, 'build', token, {m: 't'}), 401, 'AuthenticationFailed');
assert.equal((await hooks.listLastFires(group, 'build')).lastFires.length, 2);
assert.equal((await hooks.getHookStatus(group, 'build')).lastFire.result, 'success');
await hooks.removeHook(group, 'build');
await refused(hooks.hook(group, 'build'), 404, 'ResourceNotFound');
await auth.deleteRole(`hook-id:${group}/build`);

// Clean up.
await auth.deleteClient(clientId);
await auth.deleteRole(roleId);
await refused(auth.client(clientId), 404, 'ResourceNotFound');

console.log(`the Node client ${unique}: every service method as Taskcluster answers`);
