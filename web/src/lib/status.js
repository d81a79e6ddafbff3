// Task statuses as the queue sends them, in replies and in exchange messages.

const STATE_ORDER = { unscheduled: 0, pending: 1, running: 2, completed: 3, failed: 3, exception: 3 };

// Whether status `next` is at least as far along as `current`: live messages and reads race
// each other, and an older status must not replace a newer one.
export function isNewer(next, current) {
  if (!current) return true;
  const progress = (status) => {
    const runs = status.runs ?? [];
    const last = runs[runs.length - 1];
    return runs.length * 10 + (STATE_ORDER[last ? last.state : status.state] ?? 0);
  };
  return progress(next) >= progress(current);
}
