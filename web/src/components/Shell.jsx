// A shell in a running interactive task: createSession, then an xterm.js terminal on the
// session's websocket. The session starts paused: typed input waits for the worker's first
// `resume`, and stops again on `pause` (flow control, schemas/interactive.md).

import { useEffect, useRef, useState } from 'preact/hooks';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { ROOT_URL, queue } from '../lib/api.js';
import { OP, exitStatus, frame, resizeFrame } from '../lib/shell-protocol.js';
import { Message } from './Message.jsx';

// Only this queue's sockets: what is typed must not go anywhere else.
function isOwnSocket(url) {
  try {
    const socket = new URL(url);
    return socket.host === new URL(ROOT_URL).host && /^wss?:$/.test(socket.protocol);
  } catch {
    return false;
  }
}

export function Shell({ taskId, runId, onClose }) {
  const container = useRef(null);
  const [status, setStatus] = useState('opening a session…');
  const [error, setError] = useState(null);

  useEffect(() => {
    const terminal = new Terminal({
      cursorBlink: true, scrollback: 5000, fontSize: 14,
      fontFamily: 'ui-monospace, Menlo, "DejaVu Sans Mono", Consolas, monospace',
    });
    const fit = new FitAddon();
    terminal.loadAddon(fit);
    terminal.open(container.current);
    fit.fit();

    const encoder = new TextEncoder();
    const decoders = { [OP.STDOUT]: new TextDecoder(), [OP.STDERR]: new TextDecoder() };
    let socket = null;
    let paused = true;
    let ready = false;
    let queued = [];
    let closed = false;

    const open = () => socket?.readyState === WebSocket.OPEN;
    const send = (bytes) => {
      if (paused || !open()) queued.push(bytes);
      else socket.send(frame(OP.STDIN, bytes));
    };
    const flush = () => {
      const waiting = queued;
      queued = [];
      waiting.forEach(send);
    };
    const inputListener = terminal.onData((data) => { if (!closed) send(encoder.encode(data)); });
    const resizeListener = terminal.onResize(({ rows, cols }) => {
      if (ready && open()) socket.send(resizeFrame(rows, cols));
    });
    const observer = new ResizeObserver(() => fit.fit());
    observer.observe(container.current);

    function connect(url) {
      socket = new WebSocket(url);
      socket.binaryType = 'arraybuffer';
      socket.onopen = () => { setStatus('waiting for the shell…'); terminal.focus(); };
      socket.onmessage = (event) => {
        if (!(event.data instanceof ArrayBuffer) || event.data.byteLength === 0) return;
        const bytes = new Uint8Array(event.data);
        const payload = bytes.subarray(1);
        switch (bytes[0]) {
          case OP.STDOUT:
          case OP.STDERR:
            terminal.write(decoders[bytes[0]].decode(payload, { stream: true }));
            break;
          case OP.RESUME:
            paused = false;
            if (!ready) {
              ready = true;
              setStatus('connected');
              socket.send(resizeFrame(terminal.rows, terminal.cols));
            }
            flush();
            break;
          case OP.PAUSE:
            paused = true;
            break;
          case OP.STOPPED:
            terminal.write(`\r\n[the shell exited with status ${exitStatus(payload)}]\r\n`);
            break;
          case OP.SHUTDOWN:
            terminal.write('\r\n[the worker is shutting down]\r\n');
            break;
          case OP.ERROR:
            terminal.write(`\r\n[error: ${new TextDecoder().decode(payload)}]\r\n`);
            break;
          default:
            break;  // opcodes this console does not know are ignored
        }
      };
      socket.onclose = (event) => {
        closed = true;
        setStatus(event.code === 1000 ? 'closed' : `closed (code ${event.code}${event.reason ? `: ${event.reason}` : ''})`);
        terminal.write('\r\n[session closed]\r\n');
      };
    }

    queue('POST', `/task/${taskId}/runs/${runId}/sessions`, {
      body: { tty: true, rows: terminal.rows, cols: terminal.cols },
    }).then((session) => {
      if (closed) return;
      if (!isOwnSocket(session.socketUrl)) throw new Error(`the session's socket ${session.socketUrl} is not this queue's`);
      connect(session.socketUrl);
    }).catch((failure) => {
      setError(failure);
      setStatus('not connected');
    });

    return () => {
      closed = true;
      observer.disconnect();
      inputListener.dispose();
      resizeListener.dispose();
      if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000);
      terminal.dispose();
    };
  }, [taskId, runId]);

  return (
    <section class="shell" aria-labelledby="shell-title">
      <div class="shell-bar">
        <h3 id="shell-title">Shell in run {runId}</h3>
        <span role="status">{status}</span>
        <button type="button" data-action="close-shell" onClick={onClose}>Close shell</button>
      </div>
      {error && <Message error={error} />}
      <div class="shell-terminal" data-testid="shell" ref={container} />
    </section>
  );
}
