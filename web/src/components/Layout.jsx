// The frame of every page: a skip link, the header with the navigation and the sign-in,
// and the main landmark the page renders into.

import { SignIn } from './SignIn.jsx';

const SECTIONS = [
  ['/', 'Home'],
  ['/queues', 'Task queues'],
  ['/index', 'Index'],
  ['/hooks', 'Hooks'],
  ['/secrets', 'Secrets'],
  ['/clients', 'Clients'],
  ['/roles', 'Roles'],
];

function isCurrent(href, path) {
  return href === '/' ? path === '/' : path === href || path.startsWith(`${href}/`);
}

export function Layout({ path, mainRef, children }) {
  return (
    <>
      <a class="skip-link" href="#main">Skip to content</a>
      <header class="site-header">
        <a class="brand" href="/">Taskfold</a>
        <nav aria-label="Main">
          <ul>
            {SECTIONS.map(([href, label]) => (
              <li key={href}>
                <a href={href} aria-current={isCurrent(href, path) ? 'page' : undefined}>{label}</a>
              </li>
            ))}
          </ul>
        </nav>
        <SignIn />
      </header>
      <main id="main" ref={mainRef} tabIndex={-1}>{children}</main>
    </>
  );
}
