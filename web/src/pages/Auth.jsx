// Clients and roles of the auth service, read-only.

import { listAll, request, segment } from '../lib/api.js';
import { useAsync, useTitle } from '../lib/hooks.js';
import { pagePath } from '../lib/router.js';
import { Loading, Message } from '../components/Message.jsx';
import { Time } from '../components/Time.jsx';

function Scopes({ scopes, title }) {
  return (
    <section aria-label={title}>
      <h2>{title}</h2>
      {scopes?.length ? <ul class="scopes">{scopes.map((scope) => <li key={scope}><code>{scope}</code></li>)}</ul> : <p>None.</p>}
    </section>
  );
}

export function ClientsPage() {
  useTitle('Clients');
  const loaded = useAsync((signal) => listAll('auth', '/clients/', 'clients', { signal }), []);
  return (
    <>
      <h1>Clients</h1>
      {loaded.error ? <Message error={loaded.error} /> : !loaded.data ? <Loading /> : (
        <table class="table">
          <thead><tr><th scope="col">Client</th><th scope="col">Description</th><th scope="col" class="col-wide">Expires</th><th scope="col">Disabled</th></tr></thead>
          <tbody>
            {loaded.data.map((client) => (
              <tr key={client.clientId}>
                <th scope="row"><a href={pagePath('clients', client.clientId)}>{client.clientId}</a></th>
                <td>{client.description}</td>
                <td class="col-wide"><Time value={client.expires} /></td>
                <td>{client.disabled ? 'yes' : 'no'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

export function ClientPage({ params: [clientId] }) {
  useTitle(`Client ${clientId}`);
  const loaded = useAsync((signal) => request('auth', 'GET', `/clients/${segment(clientId)}`, { signal }), [clientId]);
  const client = loaded.data;
  return (
    <>
      <h1>Client {clientId}</h1>
      {loaded.error ? <Message error={loaded.error} /> : !client ? <Loading /> : (
        <>
          {client.description && <p class="description">{client.description}</p>}
          <dl class="facts">
            <div><dt>Created</dt><dd><Time value={client.created} /></dd></div>
            <div><dt>Expires</dt><dd><Time value={client.expires} /></dd></div>
            <div><dt>Last used</dt><dd><Time value={client.lastDateUsed} /></dd></div>
            <div><dt>Disabled</dt><dd>{client.disabled ? 'yes' : 'no'}</dd></div>
          </dl>
          <Scopes title="Scopes" scopes={client.scopes} />
          <Scopes title="Expanded scopes" scopes={client.expandedScopes} />
        </>
      )}
    </>
  );
}

export function RolesPage() {
  useTitle('Roles');
  const loaded = useAsync((signal) => request('auth', 'GET', '/roles/', { signal }), []);
  return (
    <>
      <h1>Roles</h1>
      {loaded.error ? <Message error={loaded.error} /> : !loaded.data ? <Loading /> : (
        <table class="table">
          <thead><tr><th scope="col">Role</th><th scope="col">Description</th><th scope="col">Scopes</th></tr></thead>
          <tbody>
            {loaded.data.map((role) => (
              <tr key={role.roleId}>
                <th scope="row"><a href={pagePath('roles', role.roleId)}>{role.roleId}</a></th>
                <td>{role.description}</td>
                <td>{role.scopes?.length ?? 0}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

export function RolePage({ params: [roleId] }) {
  useTitle(`Role ${roleId}`);
  const loaded = useAsync((signal) => request('auth', 'GET', `/roles/${segment(roleId)}`, { signal }), [roleId]);
  const role = loaded.data;
  return (
    <>
      <h1>Role {roleId}</h1>
      {loaded.error ? <Message error={loaded.error} /> : !role ? <Loading /> : (
        <>
          {role.description && <p class="description">{role.description}</p>}
          <dl class="facts">
            <div><dt>Created</dt><dd><Time value={role.created} /></dd></div>
            <div><dt>Last modified</dt><dd><Time value={role.lastModified} /></dd></div>
          </dl>
          <Scopes title="Scopes" scopes={role.scopes} />
          <Scopes title="Expanded scopes" scopes={role.expandedScopes} />
        </>
      )}
    </>
  );
}
