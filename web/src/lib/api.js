// Calls to Taskfold's services at this page's origin, signed with Hawk when signed in.
// Errors carry the server's status, Taskcluster error code and message.

import { currentCredentials } from './session.js';
import { hawkHeader, bewitUrl } from './hawk.js';

export const ROOT_URL = location.origin;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Path segments of an API URL, each encoded; `keepSlashes` for names that routes match with
// `.+` (artifact names, task queue ids, secret names), where a `/` stays a `/`.
export function segment(text, keepSlashes = false) {
  return keepSlashes
    ? String(text).split('/').map(encodeURIComponent).join('/')
    : encodeURIComponent(text);
}

export function serviceUrl(service, path, query) {
  const url = new URL(`/api/${service}/v1${path}`, ROOT_URL);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null) url.searchParams.set(name, value);
  }
  return url.href;
}

async function errorOf(response) {
  const text = await response.text().catch(() => '');
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON: a proxy's page, or nothing.
  }
  const message = body?.message
    // Taskcluster's messages end with a block of request details after `---`.
    // Scope expressions come in Markdown code fences, which read better without.
    ? String(body.message).split('\n---\n')[0].replace(/```\w*\n?/g, '').replace(/\n{3,}/g, '\n\n').trim()
    : `${response.status} ${response.statusText}${text ? `: ${text.slice(0, 200)}` : ''}`;
  return new ApiError(response.status, body?.code ?? 'HttpError', message);
}

// A signed fetch of any URL of this origin (signed only when signed in, or with the
// `credentials` given, as the sign-in form checks them before keeping them).
export async function signedFetch(url, { method = 'GET', body, signal, headers = {}, credentials = currentCredentials() } = {}) {
  const init = { method, signal, headers: { ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  if (credentials && new URL(url, ROOT_URL).origin === ROOT_URL) {
    init.headers.Authorization = await hawkHeader(method, url, credentials);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, 'NetworkError', `Could not reach the server: ${error.message}`);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

// One call: `request('queue', 'GET', '/task/…')` → the parsed JSON answer.
export async function request(service, method, path, { query, ...options } = {}) {
  const response = await signedFetch(serviceUrl(service, path, query), { method, ...options });
  const text = await response.text();
  return text ? JSON.parse(text) : {};
}

export const queue = (method, path, options) => request('queue', method, path, options);

// Every page of a listing, concatenating `key`; `onPage(itemsSoFar)` after each page. At most
// `maxItems` (then `truncated` is true on the result array).
export async function listAll(service, path, key, { query, signal, onPage, maxItems = Infinity } = {}) {
  const items = [];
  let continuationToken;
  do {
    const page = await request(service, 'GET', path, {
      query: { ...query, continuationToken }, signal,
    });
    items.push(...(page[key] ?? []));
    continuationToken = page.continuationToken;
    onPage?.(items);
  } while (continuationToken && items.length < maxItems);
  items.truncated = Boolean(continuationToken);
  return items;
}

// A link for the browser to follow: signed with a bewit when signed in, else plain.
export async function linkUrl(url) {
  const credentials = currentCredentials();
  return credentials ? bewitUrl(url, credentials) : url;
}

export function artifactUrl(taskId, runId, name) {
  return serviceUrl('queue', `/task/${taskId}/runs/${runId}/artifacts/${segment(name, true)}`);
}

// A short sentence for an error shown to the visitor.
export function describeError(error) {
  if (error instanceof ApiError) {
    if (error.status === 403 && !currentCredentials()) {
      return `Anonymous visitors may not do this; sign in with a client that may. ${error.message}`;
    }
    return error.status ? `${error.message} (${error.code}, HTTP ${error.status})` : error.message;
  }
  return String(error?.message ?? error);
}
