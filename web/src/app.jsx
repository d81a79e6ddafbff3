// The console: the route table, the layout around every page, and the error boundary that
// keeps a failing page from blanking the whole console.

import { useEffect, useRef } from 'preact/hooks';
import { ErrorBoundary } from './components/ErrorBoundary.jsx';
import { Layout } from './components/Layout.jsx';
import { match, useLocation } from './lib/router.js';
import { useSession } from './lib/session.js';
import { HomePage } from './pages/Home.jsx';
import { TaskPage } from './pages/Task.jsx';
import { GroupPage } from './pages/Group.jsx';
import { QueuesPage, QueuePage } from './pages/Queues.jsx';
import { IndexPage } from './pages/Index.jsx';
import { HookGroupsPage, HookGroupPage, HookPage } from './pages/Hooks.jsx';
import { SecretsPage, SecretPage } from './pages/Secrets.jsx';
import { ClientsPage, ClientPage, RolesPage, RolePage } from './pages/Auth.jsx';
import { NotFoundPage } from './pages/NotFound.jsx';

// Pattern → page; the captured groups are the page's `params`, decoded.
const ROUTES = [
  [/^\/$/, HomePage],
  [/^\/tasks\/([^/]+)\/?$/, TaskPage],
  [/^\/groups\/([^/]+)\/?$/, GroupPage],
  [/^\/queues\/?$/, QueuesPage],
  [/^\/queues\/(.+?)\/?$/, QueuePage],
  [/^\/index(?:\/(.*?))?\/?$/, IndexPage],
  [/^\/hooks\/?$/, HookGroupsPage],
  [/^\/hooks\/([^/]+)\/?$/, HookGroupPage],
  [/^\/hooks\/([^/]+)\/(.+?)\/?$/, HookPage],
  [/^\/secrets\/?$/, SecretsPage],
  [/^\/secrets\/(.+)$/, SecretPage],
  [/^\/clients\/?$/, ClientsPage],
  [/^\/clients\/(.+)$/, ClientPage],
  [/^\/roles\/?$/, RolesPage],
  [/^\/roles\/(.+)$/, RolePage],
];

export function App() {
  const { path, query } = useLocation();
  const found = match(ROUTES, path) ?? { page: NotFoundPage, params: [] };
  const Page = found.page;
  const main = useRef(null);
  const first = useRef(true);
  // Signing in or out loads the page again, with what the new client may read.
  const { credentials } = useSession();
  const pageKey = `${path}|${credentials?.clientId ?? ''}`;

  // After a navigation (not the first load), start at the top with focus on the new page.
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    window.scrollTo(0, 0);
    main.current?.focus({ preventScroll: true });
  }, [path]);

  return (
    <Layout path={path} mainRef={main}>
      <ErrorBoundary resetKey={pageKey}>
        <Page key={pageKey} params={found.params} query={query} />
      </ErrorBoundary>
    </Layout>
  );
}
