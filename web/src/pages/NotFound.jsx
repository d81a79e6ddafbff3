import { useTitle } from '../lib/hooks.js';
import { Message } from '../components/Message.jsx';

export function NotFoundPage() {
  useTitle('Page not found');
  return (
    <>
      <h1>Page not found</h1>
      <Message>The console has no page at <code>{location.pathname}</code>. <a href="/">Start from the home page</a>.</Message>
    </>
  );
}
