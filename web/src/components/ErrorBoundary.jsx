// Renders an error a page threw while rendering instead of a blank page; navigating away
// (a new `resetKey`) tries again.

import { Component } from 'preact';
import { Message } from './Message.jsx';

export class ErrorBoundary extends Component {
  state = { error: null, resetKey: null };

  static getDerivedStateFromProps(props, state) {
    return props.resetKey !== state.resetKey ? { error: null, resetKey: props.resetKey } : null;
  }

  componentDidCatch(error) {
    console.error(error);
    this.setState({ error });
  }

  render() {
    if (this.state.error) {
      return (
        <>
          <h1>Something went wrong</h1>
          <Message>
            This page failed: {String(this.state.error?.message ?? this.state.error)}.
            Other pages may still work; reloading may help.
          </Message>
        </>
      );
    }
    return this.props.children;
  }
}
