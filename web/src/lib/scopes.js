// Taskcluster scope satisfaction, to show only the actions the signed-in client may take (the
// server checks again). A held scope grants a required one when equal, or when it ends in `*`
// and the required one starts with what comes before the star. Expressions are a scope, or
// `{AnyOf: [...]}` / `{AllOf: [...]}` of expressions, as in the route handlers.

function scopeGrants(held, required) {
  return held === required || (held.endsWith('*') && required.startsWith(held.slice(0, -1)));
}

export function satisfies(scopes, expression) {
  if (!scopes) return false;
  if (typeof expression === 'string') return scopes.some((held) => scopeGrants(held, expression));
  if (expression.AnyOf) return expression.AnyOf.some((inner) => satisfies(scopes, inner));
  if (expression.AllOf) return expression.AllOf.every((inner) => satisfies(scopes, inner));
  return false;
}

// What each action of the console requires, from the Rust handlers (src/api/routes/*.rs and
// schemas/interactive.md).

function taskAction(action, task, taskId) {
  const { schedulerId, taskGroupId, projectId } = task;
  return {
    AnyOf: [
      `queue:${action}:${schedulerId}/${taskGroupId}/${taskId}`,
      `queue:${action}-in-project:${projectId}`,
      { AllOf: [`queue:${action}`, `assume:scheduler-id:${schedulerId}/${taskGroupId}`] },
    ],
  };
}

export const PRIORITIES = ['highest', 'very-high', 'high', 'medium', 'low', 'very-low', 'lowest'];

export const required = {
  rerun: (task, taskId) => taskAction('rerun-task', task, taskId),
  cancel: (task, taskId) => taskAction('cancel-task', task, taskId),
  priority: (task, taskId) => ({
    AnyOf: [`queue:change-task-priority:${taskId}`,
      `queue:change-task-priority-in-queue:${task.taskQueueId}`],
  }),
  shell: (task, taskId) => ({
    AnyOf: [`queue:create-session:${taskId}`, `queue:create-session-in-queue:${task.taskQueueId}`],
  }),
  // createTask of this definition: its scopes and routes, its project and scheduler, and its
  // priority (or a higher one) in its queue.
  createTask: (task) => {
    const priority = PRIORITIES.indexOf(task.priority ?? 'lowest');
    const higherOrEqual = PRIORITIES.slice(0, priority < 0 ? PRIORITIES.length : priority + 1);
    return {
      AllOf: [
        ...(task.scopes ?? []),
        ...(task.routes ?? []).map((route) => `queue:route:${route}`),
        `queue:create-task:project:${task.projectId ?? 'none'}`,
        `queue:scheduler-id:${task.schedulerId ?? '-'}`,
        { AnyOf: higherOrEqual.map((name) => `queue:create-task:${name}:${task.taskQueueId}`) },
      ],
    };
  },
  sealGroup: (group) => `queue:seal-task-group:${group.schedulerId}/${group.taskGroupId}`,
  cancelGroup: (group) => `queue:cancel-task-group:${group.schedulerId}/${group.taskGroupId}`,
  quarantine: (taskQueueId, workerGroup, workerId) =>
    `queue:quarantine-worker:${taskQueueId}/${workerGroup}/${workerId}`,
  readSecret: (name) => `secrets:get:${name}`,
  answerInput: (task) => `queue:answer-input:${task.taskQueueId}`,
};
