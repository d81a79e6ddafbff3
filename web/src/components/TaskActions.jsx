// What the signed-in client may do to a task, by its scopes: rerun, cancel, change the
// priority, open a shell, and edit a copy. Anonymous visitors get none of these.

import { useState } from 'preact/hooks';
import { queue } from '../lib/api.js';
import { PRIORITIES, required, satisfies } from '../lib/scopes.js';
import { useSession } from '../lib/session.js';
import { Message } from './Message.jsx';
import { CopyTask } from './CopyTask.jsx';

const RESOLVED = ['completed', 'failed', 'exception'];

export function TaskActions({ taskId, task, status, onStatus, onShell }) {
  const { credentials, scopes } = useSession();
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState(null);
  const [panel, setPanel] = useState(null);  // 'priority' | 'copy' | null
  const [priority, setPriority] = useState(status.priority ?? task.priority);
  if (!credentials || !scopes) return null;

  const may = (action) => satisfies(scopes, required[action](task, taskId));
  const state = status.state;
  const resolved = RESOLVED.includes(state);
  const lastRun = status.runs[status.runs.length - 1];
  const interactive = Boolean(task.payload?.features?.interactive);

  async function act(label, method, path, body) {
    setBusy(true);
    setResult(null);
    try {
      const answer = await queue(method, path, { body });
      if (answer.status) onStatus(answer.status);
      setResult({ ok: `${label}: done.` });
      setPanel(null);
    } catch (error) {
      setResult({ error });
    } finally {
      setBusy(false);
    }
  }

  const buttons = [];
  if (may('rerun')) {
    buttons.push(
      <button type="button" data-action="rerun" disabled={busy || !resolved}
        title={resolved ? 'Run the task again' : 'Only a resolved task can be rerun'}
        onClick={() => act('Rerun', 'POST', `/task/${taskId}/rerun`)}>Rerun</button>);
  }
  if (may('cancel')) {
    buttons.push(
      <button type="button" data-action="cancel" disabled={busy || resolved}
        title={resolved ? 'The task is already resolved' : 'Cancel the task'}
        onClick={() => act('Cancel', 'POST', `/task/${taskId}/cancel`)}>Cancel task</button>);
  }
  if (may('priority')) {
    buttons.push(
      <button type="button" data-action="priority" disabled={busy || resolved}
        aria-expanded={panel === 'priority' ? 'true' : 'false'}
        onClick={() => setPanel(panel === 'priority' ? null : 'priority')}>Change priority</button>);
  }
  if (may('shell') && interactive && state === 'running') {
    buttons.push(
      <button type="button" data-action="shell" disabled={busy}
        onClick={() => onShell(lastRun.runId)}>Open shell</button>);
  }
  if (satisfies(scopes, required.createTask(task))) {
    buttons.push(
      <button type="button" data-action="copy" aria-expanded={panel === 'copy' ? 'true' : 'false'}
        onClick={() => setPanel(panel === 'copy' ? null : 'copy')}>Edit and create a copy</button>);
  }
  if (buttons.length === 0) return null;

  return (
    <section class="actions" aria-label="Actions">
      <div class="buttons">{buttons}</div>
      {panel === 'priority' && (
        <form class="inline-form" onSubmit={(event) => {
          event.preventDefault();
          act('Priority change', 'POST', `/task/${taskId}/priority`, { newPriority: priority });
        }}>
          <label>New priority
            <select name="priority" value={priority} onChange={(event) => setPriority(event.currentTarget.value)}>
              {PRIORITIES.map((name) => <option key={name} value={name}>{name}</option>)}
            </select>
          </label>
          <button type="submit" disabled={busy}>Set priority</button>
        </form>
      )}
      {panel === 'copy' && <CopyTask task={task} onCancel={() => setPanel(null)} />}
      {result?.ok && <p class="notice" role="status">{result.ok}</p>}
      {result?.error && <Message error={result.error} />}
    </section>
  );
}
