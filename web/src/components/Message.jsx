// A clear message for the visitor: errors, and answers such as "no such task". Screen
// readers announce it (role="alert"); tests find it by data-testid. An anonymous visitor
// refused for lack of scopes is not shown an error but asked to sign in: most listings
// (task queues, index, hooks, secrets, clients, roles) are not public reads.

import { ApiError, describeError } from '../lib/api.js';
import { currentCredentials } from '../lib/session.js';

export function Message({ children, error, kind = 'error' }) {
  if (error instanceof ApiError && error.status === 403 && !currentCredentials()) {
    return (
      <p class="notice sign-in-needed" role="status" data-testid="sign-in-needed">
        Sign in to see this; anonymous visitors may not. {error.message}
      </p>
    );
  }
  return (
    <div class={`message message-${kind}`} data-testid="message" role="alert">
      {error ? describeError(error) : children}
    </div>
  );
}

// "Loading…" for the short while a page waits for its data.
export function Loading({ what = 'Loading' }) {
  return <p class="loading" role="status">{what}…</p>;
}
