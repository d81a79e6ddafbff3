// The request of an INPUT task's run (`schemas/input-payload.json`): the question, what it
// refers to, and until when it waits; a form to answer it for a signed-in client holding
// `queue:answer-input:<taskQueueId>`. The request makes no exchange message, so while the run
// runs and has not asked yet, it is looked up again every two seconds.

import { useEffect, useState } from 'preact/hooks';
import { ApiError, queue } from '../lib/api.js';
import { required, satisfies } from '../lib/scopes.js';
import { useSession } from '../lib/session.js';
import { Json } from './Json.jsx';
import { Message } from './Message.jsx';
import { Time } from './Time.jsx';

const RETRY_MS = 2000;

export function InputRequest({ taskId, task, run }) {
  const { credentials, scopes } = useSession();
  const [input, setInput] = useState(null);
  const [error, setError] = useState(null);
  const [text, setText] = useState('');
  const [busy, setBusy] = useState(false);
  const running = run.state === 'running';

  useEffect(() => {
    let stopped = false;
    let timer = null;
    setInput(null);
    async function load() {
      try {
        const found = await queue('GET', `/task/${taskId}/runs/${run.runId}/input`);
        if (!stopped) setInput(found);
      } catch (failure) {
        if (stopped) return;
        if (failure instanceof ApiError && failure.status === 404) {
          if (running) timer = setTimeout(load, RETRY_MS);
        } else {
          setError(failure);
        }
      }
    }
    load();
    return () => { stopped = true; clearTimeout(timer); };
  }, [taskId, run.runId, run.state]);

  if (error) return <Message error={error} />;
  if (!input) return null;
  const mayAnswer = Boolean(credentials) && satisfies(scopes, required.answerInput(task));

  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    let response;
    try {
      response = JSON.parse(text);
    } catch {
      response = text;
    }
    try {
      setInput(await queue('POST', `/task/${taskId}/runs/${run.runId}/input`, { body: { response } }));
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  }

  return (
    <section aria-labelledby="input-title" data-testid="input-request">
      <h2 id="input-title">Input requested by run {run.runId}</h2>
      <p class="description" data-testid="input-question">{input.request}</p>
      <dl class="facts">
        <div><dt>State</dt><dd data-testid="input-state">{input.state}</dd></div>
        <div><dt>Asked</dt><dd><Time value={input.requested} /></dd></div>
        <div><dt>Expires</dt><dd><Time value={input.expires} /></dd></div>
        {input.answered && <div><dt>Answered</dt><dd><Time value={input.answered} /> by {input.clientId ?? 'anonymous'}</dd></div>}
      </dl>
      {input.reference !== null && input.reference !== undefined
        && <Json value={input.reference} label="Reference" />}
      {input.state === 'answered' && <Json value={input.response} testid="input-response" label="Response" />}
      {input.state === 'waiting' && mayAnswer && (
        <form class="inline-form" data-testid="input-form" onSubmit={submit}>
          <label>Response (JSON, or text)
            <textarea name="response" rows="2" cols="40" value={text}
              onInput={(event) => setText(event.currentTarget.value)} />
          </label>
          <button type="submit" disabled={busy || text === ''}>Answer</button>
        </form>
      )}
    </section>
  );
}
