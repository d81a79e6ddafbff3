// A task or run state, coloured by its kind.

export function State({ state, testid }) {
  return <span class={`state state-${state}`} data-testid={testid}>{state}</span>;
}
