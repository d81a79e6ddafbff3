// An id in monospace with a button that copies it.

import { useState } from 'preact/hooks';

export function CopyableId({ id }) {
  const [copied, setCopied] = useState(false);
  return (
    <span class="copyable">
      <code>{id}</code>
      <button
        type="button" class="small" aria-label={`Copy ${id}`}
        onClick={() => navigator.clipboard?.writeText(id).then(() => setCopied(true), () => {})}
      >{copied ? 'Copied' : 'Copy'}</button>
    </span>
  );
}
