// Who the console acts as: anonymous, or a client whose credentials the visitor entered. The
// credentials stay in sessionStorage (this tab only, gone when it closes), never in a URL.
// The client's expanded scopes come from the auth service and decide which actions show:
// `undefined` while they load, `null` when the client may not read them.

import { useEffect, useState } from 'preact/hooks';

const STORAGE_KEY = 'taskfold-credentials';
const listeners = new Set();

let state = { credentials: readStored(), scopes: undefined };

function readStored() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(STORAGE_KEY));
    return stored && stored.clientId && stored.accessToken ? stored : null;
  } catch {
    return null;
  }
}

function set(next) {
  state = { ...state, ...next };
  for (const listener of listeners) listener(state);
}

export function currentCredentials() {
  return state.credentials;
}

export function signIn(credentials, scopes) {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(credentials));
  set({ credentials, scopes });
}

export function signOut() {
  sessionStorage.removeItem(STORAGE_KEY);
  set({ credentials: null, scopes: undefined });
}

export function setScopes(scopes) {
  set({ scopes });
}

// `{credentials, scopes}`, re-rendering the component when either changes.
export function useSession() {
  const [session, setSession] = useState(state);
  useEffect(() => {
    listeners.add(setSession);
    setSession(state);
    return () => listeners.delete(setSession);
  }, []);
  return session;
}
