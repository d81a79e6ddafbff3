// A JSON value, pretty-printed.

import { prettyJson } from '../lib/format.js';

export function Json({ value, testid, label }) {
  return (
    // Focusable, so that a long value scrolls from the keyboard; a region, to carry its name.
    <pre class="json" data-testid={testid} tabIndex={0} role="region" aria-label={label}>
      {prettyJson(value)}
    </pre>
  );
}
