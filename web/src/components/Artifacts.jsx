// The artifacts of one run, as links the browser follows: signed with a bewit when signed in,
// plain otherwise. A private artifact is first checked with the queue, so that a refusal shows
// the server's message here instead of a page of JSON.

import { useEffect, useState } from 'preact/hooks';
import { artifactUrl, describeError, linkUrl, queue, segment } from '../lib/api.js';
import { Message } from './Message.jsx';
import { Time } from './Time.jsx';

export function Artifacts({ taskId, runId, artifacts }) {
  const [hrefs, setHrefs] = useState({});
  const [refusal, setRefusal] = useState(null);

  useEffect(() => {
    let current = true;
    Promise.all(artifacts.map((artifact) => linkUrl(artifactUrl(taskId, runId, artifact.name))))
      .then((urls) => {
        if (current) setHrefs(Object.fromEntries(artifacts.map((artifact, i) => [artifact.name, urls[i]])));
      });
    return () => { current = false; };
  }, [taskId, runId, artifacts]);

  async function open(event, artifact) {
    if (artifact.name.startsWith('public/')) return;
    event.preventDefault();
    const href = event.currentTarget.href;
    setRefusal(null);
    try {
      await queue('GET', `/task/${taskId}/runs/${runId}/artifact-content/${segment(artifact.name, true)}`);
      location.assign(href);
    } catch (error) {
      setRefusal({ name: artifact.name, error });
    }
  }

  if (artifacts.length === 0) return <p>This run has no artifacts yet.</p>;
  return (
    <>
      {refusal && <Message>Artifact <code>{refusal.name}</code> cannot be opened: {describeError(refusal.error)}</Message>}
      <ul class="artifacts">
        {artifacts.map((artifact) => (
          <li key={artifact.name}>
            <a
              data-testid="artifact" data-name={artifact.name}
              href={hrefs[artifact.name] ?? artifactUrl(taskId, runId, artifact.name)}
              onClick={(event) => open(event, artifact)}
            >{artifact.name}</a>
            <span class="artifact-meta">
              {artifact.storageType}{artifact.contentType ? ` · ${artifact.contentType}` : ''} · expires <Time value={artifact.expires} />
            </span>
          </li>
        ))}
      </ul>
    </>
  );
}
