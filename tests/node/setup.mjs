// What the Node interop scripts share: the official client and slugid from
// `TASKFOLD_NODE_MODULES` (tests/run.sh installs them there), the deployment and credentials
// from `TASKCLUSTER_ROOT_URL`, `TASKCLUSTER_CLIENT_ID` and `TASKCLUSTER_ACCESS_TOKEN`, and a
// check that a call is refused with Taskcluster's status and code.

import assert from 'node:assert/strict';
import {createRequire} from 'node:module';
import path from 'node:path';

const modules = process.env.TASKFOLD_NODE_MODULES;
assert.ok(modules, 'TASKFOLD_NODE_MODULES names the directory with taskcluster-client');
const load = async name => {
  const entry = createRequire(path.join(modules, 'noop.js')).resolve(name);
  return (await import(entry)).default;
};
export const taskcluster = await load('taskcluster-client');
export const slugid = await load('slugid');

export const rootUrl = process.env.TASKCLUSTER_ROOT_URL;
export const credentials = {
  clientId: process.env.TASKCLUSTER_CLIENT_ID,
  accessToken: process.env.TASKCLUSTER_ACCESS_TOKEN,
};

export async function refused(call, status, code) {
  await assert.rejects(call, error => {
    assert.equal(error.statusCode, status, error.message);
    assert.equal(error.code, code, error.message);
    return true;
  });
}
