// A run's log, following it while the run writes it: streamed with fetch into a LogBuffer,
// shown through a VirtualList (colours parsed only for the lines in view), searchable, with a
// jump to the end. Past 16 MB only the tail is kept, and the viewer says so.

import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, ROOT_URL, artifactUrl, linkUrl, queue, segment, signedFetch } from '../lib/api.js';
import { parseAnsi, stripAnsi } from '../lib/ansi.js';
import { formatBytes } from '../lib/format.js';
import { LOG_TAIL_BYTES, LogBuffer, readInto } from '../lib/log-buffer.js';
import { Message } from './Message.jsx';
import { VirtualList } from './VirtualList.jsx';

const ROW_HEIGHT = 18;

// Where the log's bytes are: the artifact's content URL, fetched with the visitor's
// credentials only when it is this server's live log (blob URLs carry their own signature).
async function openLog(taskId, runId, name, signal) {
  const content = await queue('GET', `/task/${taskId}/runs/${runId}/artifact-content/${segment(name, true)}`, { signal });
  if (content.storageType === 'error') {
    throw new ApiError(424, 'ArtifactError', `The log is an error artifact: ${content.message ?? content.reason}`);
  }
  const url = new URL(content.url, ROOT_URL);
  if (url.origin === ROOT_URL && url.pathname.startsWith('/livelog/')) return signedFetch(url.href, { signal });
  const response = await fetch(url.href, { signal });
  if (!response.ok) throw new ApiError(response.status, 'HttpError', `The log could not be read (HTTP ${response.status})`);
  return response;
}

function LogLine({ buffer, index, matches, current }) {
  const text = buffer.line(index);
  const number = buffer.droppedLines + index + 1;
  const classes = ['log-line'];
  if (matches.has(index)) classes.push('log-match');
  if (index === current) classes.push('log-current');
  return (
    <div class={classes.join(' ')} data-testid="log-line" data-line={number}>
      <span class="log-number" aria-hidden="true">{number}</span>
      <span class="log-text">
        {parseAnsi(text).map((part) =>
          part.className || Object.keys(part.style).length
            ? <span class={part.className} style={part.style}>{part.text}</span>
            : part.text)}
      </span>
    </div>
  );
}

export function LogViewer({ taskId, runId, name, resolved }) {
  const [buffer, setBuffer] = useState(() => new LogBuffer());
  const [, setVersion] = useState(0);
  const [complete, setComplete] = useState(false);
  const [error, setError] = useState(null);
  const [attempt, setAttempt] = useState(0);
  const [rawUrl, setRawUrl] = useState(null);
  const [query, setQuery] = useState('');
  const [matches, setMatches] = useState({ list: [], set: new Set() });
  const [current, setCurrent] = useState(-1);
  const list = useRef(null);
  // Following the end until the visitor scrolls up; scrolling back to the end follows again.
  const follow = useRef(true);
  const lastTop = useRef(0);

  useEffect(() => {
    const fresh = new LogBuffer();
    setBuffer(fresh);
    setComplete(false);
    setError(null);
    follow.current = true;
    linkUrl(artifactUrl(taskId, runId, name)).then(setRawUrl);
    const abort = new AbortController();
    let frame = 0;
    // One render per animation frame however many chunks arrive.
    const progress = () => {
      if (!frame) frame = requestAnimationFrame(() => { frame = 0; setVersion((v) => v + 1); });
    };
    openLog(taskId, runId, name, abort.signal)
      .then((response) => readInto(response, fresh, progress))
      .then(() => setComplete(true))
      .catch((failure) => { if (failure.name !== 'AbortError') setError(failure); });
    return () => { abort.abort(); cancelAnimationFrame(frame); };
  }, [taskId, runId, name, attempt]);

  // A live log that failed (not there yet, or cut off) is read again, whole, once the run
  // is resolved.
  useEffect(() => {
    if (resolved && error) setAttempt((n) => n + 1);
  }, [resolved]);

  // Keep the end in view while following.
  useEffect(() => {
    if (follow.current) list.current?.scrollToEnd();
  });

  // Search, a moment after typing stops, over the text without escapes; a new query jumps to
  // its first match, a search again over more lines (the log completed) stays put.
  const searched = useRef('');
  useEffect(() => {
    const needle = query.trim().toLowerCase();
    if (!needle) {
      setMatches({ list: [], set: new Set() });
      setCurrent(-1);
      searched.current = '';
      return undefined;
    }
    const timer = setTimeout(() => {
      const found = [];
      for (let index = 0; index < buffer.count; index++) {
        if (stripAnsi(buffer.line(index)).toLowerCase().includes(needle)) found.push(index);
      }
      setMatches({ list: found, set: new Set(found) });
      if (found.length > 0 && searched.current !== needle) goTo(found, 0);
      searched.current = needle;
    }, 200);
    return () => clearTimeout(timer);
  }, [query, buffer, complete]);

  function goTo(found, position) {
    const index = found[(position + found.length) % found.length];
    follow.current = false;
    setCurrent(index);
    list.current?.scrollToIndex(index);
  }

  function step(direction) {
    if (matches.list.length === 0) return;
    const position = matches.list.indexOf(current);
    goTo(matches.list, position < 0 ? 0 : position + direction);
  }

  const position = matches.list.indexOf(current);
  return (
    <div
      class="log-viewer" data-testid="log" data-lines={buffer.total}
      data-complete={complete ? 'true' : 'false'}
    >
      <div class="log-toolbar">
        <label class="log-search">
          <span>Search the log</span>
          <input
            type="search" name="log-search" value={query}
            onInput={(event) => setQuery(event.currentTarget.value)}
            onKeyDown={(event) => { if (event.key === 'Enter') { event.preventDefault(); step(event.shiftKey ? -1 : 1); } }}
          />
        </label>
        {query.trim() && (
          <span class="log-matches" role="status">
            {matches.list.length === 0 ? 'no match' : `${position + 1} of ${matches.list.length}`}
          </span>
        )}
        <button type="button" onClick={() => step(-1)} disabled={matches.list.length === 0}>Previous</button>
        <button type="button" onClick={() => step(1)} disabled={matches.list.length === 0}>Next</button>
        <button
          type="button" data-action="log-end"
          onClick={() => { follow.current = true; list.current?.scrollToEnd(); }}
        >Jump to end</button>
        {rawUrl && <a href={rawUrl} class="log-raw">Raw log</a>}
        <span class="log-progress" role="status">
          {complete ? 'complete' : error ? 'stopped' : 'following…'} · {buffer.total} lines · {formatBytes(buffer.receivedBytes)}
        </span>
      </div>
      {buffer.truncated && (
        <p class="notice" role="status" data-testid="log-notice">
          The log is {(buffer.receivedBytes / (1024 * 1024)).toFixed(1)} MB; showing the last {LOG_TAIL_BYTES / (1024 * 1024)} MB.
          {' '}{rawUrl && <a href={rawUrl}>Download the whole log</a>}
        </p>
      )}
      {error && (
        <div class="log-error">
          <Message error={error} />
          <button type="button" onClick={() => setAttempt((n) => n + 1)}>Read the log again</button>
        </div>
      )}
      <div class="log" style={{ '--log-number-width': `${String(buffer.total).length + 1}ch` }}>
        <VirtualList
          count={buffer.count}
          rowHeight={ROW_HEIGHT}
          controller={list}
          class="log-lines"
          tabIndex={0}
          role="region"
          aria-label="Log"
          onScroll={(event) => {
            const top = event.currentTarget.scrollTop;
            if (list.current.atEnd()) follow.current = true;
            else if (top < lastTop.current) follow.current = false;
            lastTop.current = top;
          }}
          renderRow={(index) => (
            <LogLine key={index} buffer={buffer} index={index} matches={matches.set} current={current} />
          )}
        />
      </div>
    </div>
  );
}
