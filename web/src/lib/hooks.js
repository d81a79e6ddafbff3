// Hooks the pages share.

import { useEffect, useState } from 'preact/hooks';

// Loads data for a page: `{data, error, loading, reload}`. `load(signal)` runs again when
// `deps` change; an answer arriving after that is dropped.
export function useAsync(load, deps) {
  const [result, setResult] = useState({ data: undefined, error: null, loading: true });
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    const abort = new AbortController();
    setResult((previous) => ({ ...previous, error: null, loading: true }));
    load(abort.signal).then(
      (data) => { if (!abort.signal.aborted) setResult({ data, error: null, loading: false }); },
      (error) => { if (!abort.signal.aborted) setResult({ data: undefined, error, loading: false }); },
    );
    return () => abort.abort();
  }, [...deps, attempt]);
  return { ...result, reload: () => setAttempt((n) => n + 1) };
}

export function useTitle(title) {
  useEffect(() => {
    document.title = title ? `${title} · Taskfold` : 'Taskfold console';
  }, [title]);
}
