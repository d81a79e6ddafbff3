// Entry point: starts the router, loads the scopes of a client signed in earlier in this
// tab, and renders the console. Errors nothing else caught end up in a visible alert.

import { render } from 'preact';
import '@xterm/xterm/css/xterm.css';
import './styles.css';
import { App } from './app.jsx';
import { startRouter } from './lib/router.js';
import { loadStoredScopes } from './components/SignIn.jsx';

function showUncaught(error) {
  console.error(error);
  let box = document.getElementById('uncaught-error');
  if (!box) {
    box = document.createElement('div');
    box.id = 'uncaught-error';
    box.className = 'message message-error uncaught';
    box.setAttribute('role', 'alert');
    box.dataset.testid = 'message';
    document.body.prepend(box);
  }
  box.textContent = `Something went wrong: ${error?.message ?? error}`;
}

window.addEventListener('error', (event) => {
  // Chromium reports a ResizeObserver that needed another frame as an error; it is harmless.
  if (String(event.message).startsWith('ResizeObserver loop')) return;
  showUncaught(event.error ?? event.message);
});
window.addEventListener('unhandledrejection', (event) => showUncaught(event.reason));

try {
  startRouter();
  loadStoredScopes();
  render(<App />, document.getElementById('app'));
} catch (error) {
  showUncaught(error);
}
