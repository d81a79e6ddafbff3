// Hawk request signing and bewits, as the server checks them (src/auth/hawk.rs, bewit.rs):
// HMAC-SHA256 over the normalized string of the request-target exactly as the browser sends
// it, the host and port of this page, no payload hash and no ext (permanent credentials).

import { hmacSha256 } from './sha256.js';
import { base64, base64url } from './slugid.js';

const encoder = new TextEncoder();

async function hmac(key, text) {
  // crypto.subtle exists only in secure contexts (https, localhost).
  if (!globalThis.crypto?.subtle) {
    return base64(hmacSha256(encoder.encode(key), encoder.encode(text)));
  }
  const cryptoKey = await crypto.subtle.importKey(
    'raw', encoder.encode(key), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return base64(new Uint8Array(await crypto.subtle.sign('HMAC', cryptoKey, encoder.encode(text))));
}

// Where a URL is signed for: the request-target, host and port the server will see.
function place(url) {
  const target = new URL(url, location.href);
  const port = target.port || (target.protocol === 'https:' ? '443' : '80');
  return { resource: target.pathname + target.search, host: target.hostname.toLowerCase(), port };
}

function normalized(kind, ts, nonce, method, { resource, host, port }) {
  // Lines: kind, ts, nonce, METHOD, resource, host, port, hash, ext, each ending in \n.
  return `hawk.1.${kind}\n${ts}\n${nonce}\n${method.toUpperCase()}\n${resource}\n${host}\n${port}\n\n\n`;
}

// The `Authorization` header for one request.
export async function hawkHeader(method, url, { clientId, accessToken }) {
  const ts = Math.floor(Date.now() / 1000);
  const nonce = base64url(crypto.getRandomValues(new Uint8Array(8)));
  const mac = await hmac(accessToken, normalized('header', ts, nonce, method, place(url)));
  return `Hawk id="${clientId}", ts="${ts}", nonce="${nonce}", mac="${mac}"`;
}

// `url` with a `bewit` query parameter that lets a plain GET (a link, an <a download>) through
// for `seconds`. The MAC signs the URL without the parameter.
export async function bewitUrl(url, { clientId, accessToken }, seconds = 3600) {
  const absolute = new URL(url, location.href).href;
  const exp = Math.floor(Date.now() / 1000) + seconds;
  const mac = await hmac(accessToken, normalized('bewit', exp, '', 'GET', place(absolute)));
  const bewit = base64url(encoder.encode(`${clientId}\\${exp}\\${mac}\\`));
  return `${absolute}${absolute.includes('?') ? '&' : '?'}bewit=${bewit}`;
}
