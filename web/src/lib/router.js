// A small client-side router over the History API. Same-origin links to console pages are
// followed without a reload; everything under /api, /livelog, /blobs, /shell goes to the
// browser as usual. Pages are matched against a table of patterns in app.jsx.

import { useEffect, useState } from 'preact/hooks';

const listeners = new Set();
const NOT_CONSOLE = /^\/(api|livelog|blobs|shell|console)(\/|$)/;

function current() {
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}

function notify() {
  const place = current();
  for (const listener of listeners) listener(place);
}

export function navigate(href, { replace = false } = {}) {
  const url = new URL(href, location.href);
  if (url.origin !== location.origin || NOT_CONSOLE.test(url.pathname)) {
    location.assign(url.href);
    return;
  }
  if (url.href !== location.href) {
    history[replace ? 'replaceState' : 'pushState'](null, '', url.href);
  }
  notify();
}

// Same-origin links to console pages, clicked without modifier keys, stay in the page.
function onClick(event) {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest?.('a[href]');
  if (!link || link.target || link.hasAttribute('download')) return;
  const url = new URL(link.href);
  if (url.origin !== location.origin || NOT_CONSOLE.test(url.pathname)) return;
  // A link within this page (the skip link) is the browser's to follow.
  if (url.hash && url.pathname === location.pathname && url.search === location.search) return;
  event.preventDefault();
  navigate(url.href);
}

export function startRouter() {
  document.addEventListener('click', onClick);
  window.addEventListener('popstate', notify);
}

// `{path, query}` of the current page, re-rendering on navigation.
export function useLocation() {
  const [place, setPlace] = useState(current);
  useEffect(() => {
    listeners.add(setPlace);
    return () => listeners.delete(setPlace);
  }, []);
  return place;
}

// The first route whose pattern matches `path`: `{page, params}` (params decoded).
export function match(routes, path) {
  for (const [pattern, page] of routes) {
    const found = pattern.exec(path);
    if (found) {
      const params = found.slice(1).map((part) => (part === undefined ? undefined : safeDecode(part)));
      return { page, params };
    }
  }
  return null;
}

function safeDecode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

// Builds a console path from segments, encoding each but keeping `/` in slash-holding ids.
export function pagePath(...parts) {
  return '/' + parts.map((part) => String(part).split('/').map(encodeURIComponent).join('/')).join('/');
}
