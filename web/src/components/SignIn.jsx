// Signing in and out. The credentials are checked by asking the auth service for the
// client's scopes (which also decide the actions shown), then kept for this tab only.

import { useLayoutEffect, useRef, useState } from 'preact/hooks';
import { ApiError, request } from '../lib/api.js';
import { currentCredentials, setScopes, signIn, signOut, useSession } from '../lib/session.js';
import { Message } from './Message.jsx';

// The client's expanded scopes. currentScopes needs `auth:current-scopes`; a client without
// it (a 403: its credentials are good) is asked for its own record instead, and failing that
// is taken to hold no scopes, so no actions show (`null` tells the visitor why).
async function scopesOf(credentials) {
  try {
    const { scopes } = await request('auth', 'GET', '/scopes/current', { credentials });
    return scopes ?? [];
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 403)) throw error;
  }
  try {
    const client = await request('auth', 'GET', `/clients/${encodeURIComponent(credentials.clientId)}`, { credentials });
    return client.expandedScopes ?? [];
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return null;
    throw error;
  }
}

// The scopes of credentials kept from earlier in this tab; credentials the server refuses
// are forgotten.
export function loadStoredScopes() {
  const credentials = currentCredentials();
  if (!credentials) return;
  scopesOf(credentials).then(setScopes, (error) => {
    if (error instanceof ApiError && error.status === 401) signOut();
    else setScopes([]);
  });
}

export function SignIn() {
  const { credentials, scopes } = useSession();
  const [open, setOpen] = useState(false);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const firstInput = useRef(null);
  const toggle = useRef(null);

  // Focus moves into the form as it opens (a layout effect: before anything else can type).
  useLayoutEffect(() => { if (open) firstInput.current?.focus(); }, [open]);

  if (credentials) {
    return (
      <div class="session">
        <span class="session-label">Signed in as</span>{' '}
        <strong data-testid="signed-in-as">{credentials.clientId}</strong>
        <button type="button" data-action="sign-out" onClick={signOut}>Sign out</button>
        {scopes === null && (
          <span class="hint" role="status">
            This client may not read its own scopes (<code>auth:current-scopes</code>), so no actions are offered.
          </span>
        )}
      </div>
    );
  }

  async function submit(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const entered = {
      clientId: form.elements.clientId.value.trim(),
      accessToken: form.elements.accessToken.value.trim(),
    };
    setBusy(true);
    setError(null);
    try {
      signIn(entered, await scopesOf(entered));
      setOpen(false);
    } catch (failure) {
      setError(failure instanceof ApiError && failure.status === 401
        ? new Error(`The server refused these credentials: ${failure.message}`)
        : failure);
    } finally {
      setBusy(false);
    }
  }

  return (
    <div class="session">
      <button
        ref={toggle} type="button" data-action="sign-in" aria-expanded={open ? 'true' : 'false'}
        aria-controls="sign-in-form" onClick={() => setOpen(!open)}
      >Sign in</button>
      {open && (
        <form
          id="sign-in-form" class="sign-in-form" onSubmit={submit} aria-label="Sign in"
          onKeyDown={(event) => { if (event.key === 'Escape') { setOpen(false); toggle.current?.focus(); } }}
        >
          <p class="hint">Credentials stay in this browser tab only.</p>
          <label>Client ID
            <input ref={firstInput} name="clientId" autocomplete="username" required spellcheck={false} />
          </label>
          <label>Access token
            <input name="accessToken" type="password" autocomplete="current-password" required />
          </label>
          {error && <Message error={error} />}
          <div class="buttons">
            <button type="submit" disabled={busy}>{busy ? 'Signing in…' : 'Sign in'}</button>
            <button type="button" onClick={() => setOpen(false)}>Cancel</button>
          </div>
        </form>
      )}
    </div>
  );
}
