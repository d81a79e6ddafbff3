// Secrets: their names, and a secret's value only on request, for a signed-in client whose
// scopes allow reading it.

import { useState } from 'preact/hooks';
import { listAll, request, segment } from '../lib/api.js';
import { useAsync, useTitle } from '../lib/hooks.js';
import { pagePath } from '../lib/router.js';
import { required, satisfies } from '../lib/scopes.js';
import { useSession } from '../lib/session.js';
import { Json } from '../components/Json.jsx';
import { Loading, Message } from '../components/Message.jsx';
import { Time } from '../components/Time.jsx';

export function SecretsPage() {
  useTitle('Secrets');
  const loaded = useAsync((signal) => listAll('secrets', '/secrets', 'secrets', { signal }), []);
  return (
    <>
      <h1>Secrets</h1>
      {loaded.error ? <Message error={loaded.error} /> : !loaded.data ? <Loading />
        : loaded.data.length === 0 ? <Message>No secrets.</Message> : (
          <ul class="plain-list">
            {loaded.data.map((name) => <li key={name}><a href={pagePath('secrets', name)}>{name}</a></li>)}
          </ul>
        )}
    </>
  );
}

export function SecretPage({ params: [name] }) {
  useTitle(`Secret ${name}`);
  const { credentials, scopes } = useSession();
  const [secret, setSecret] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const mayRead = Boolean(credentials) && satisfies(scopes, required.readSecret(name));

  async function reveal() {
    setBusy(true);
    setError(null);
    try {
      setSecret(await request('secrets', 'GET', `/secret/${segment(name, true)}`));
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  }

  return (
    <>
      <h1>Secret {name}</h1>
      {!credentials ? <p>Sign in as a client with <code>secrets:get:{name}</code> to see its value.</p>
        : !mayRead ? <p>The signed-in client lacks <code>secrets:get:{name}</code>, needed to see the value.</p>
          : secret ? (
            <>
              <p>Expires <Time value={secret.expires} />. <button type="button" onClick={() => setSecret(null)}>Hide the value</button></p>
              <Json value={secret.secret} label="Secret value" />
            </>
          ) : <button type="button" data-action="show-secret" disabled={busy} onClick={reveal}>Show the value</button>}
      {error && <Message error={error} />}
    </>
  );
}
