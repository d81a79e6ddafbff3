// Edit a copy of a task's definition and create it under a new taskId. The copy's dates move
// to now, keeping the original's deadline and expiry distances.

import { useState } from 'preact/hooks';
import { queue } from '../lib/api.js';
import { prettyJson } from '../lib/format.js';
import { navigate } from '../lib/router.js';
import { niceSlugid } from '../lib/slugid.js';
import { Message } from './Message.jsx';

function copyOf(task) {
  const now = Date.now();
  const created = new Date(task.created).getTime();
  const shifted = (iso) => iso && new Date(now + (new Date(iso).getTime() - created)).toISOString();
  const copy = { ...task, created: new Date(now).toISOString(), deadline: shifted(task.deadline) };
  if (task.expires) copy.expires = shifted(task.expires);
  return copy;
}

export function CopyTask({ task, onCancel }) {
  const [taskId] = useState(niceSlugid);
  const [text] = useState(() => prettyJson(copyOf(task)));
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  async function submit(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const newTaskId = form.elements.newTaskId.value.trim();
    setError(null);
    let definition;
    try {
      definition = JSON.parse(form.elements.definition.value);
    } catch (failure) {
      setError(new Error(`The definition is not valid JSON: ${failure.message}`));
      return;
    }
    setBusy(true);
    try {
      await queue('PUT', `/task/${encodeURIComponent(newTaskId)}`, { body: definition });
      navigate(`/tasks/${newTaskId}`);
    } catch (failure) {
      setError(failure);
      setBusy(false);
    }
  }

  return (
    <form class="copy-task" onSubmit={submit}>
      <label>New taskId
        <input name="newTaskId" defaultValue={taskId} required spellcheck={false} />
      </label>
      <label>Task definition (JSON)
        <textarea name="definition" rows={20} spellcheck={false} defaultValue={text} />
      </label>
      {error && <Message error={error} />}
      <div class="buttons">
        <button type="submit" disabled={busy}>{busy ? 'Creating…' : 'Create task'}</button>
        <button type="button" onClick={onCancel}>Cancel</button>
      </div>
    </form>
  );
}
