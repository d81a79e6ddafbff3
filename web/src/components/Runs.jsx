// A task's runs as a timeline: for each, why it was created, when it was scheduled, started
// and resolved, on which worker and why it ended, with a bar on a time axis shared by all
// runs (waiting in grey, running in the state's colour).

import { Time } from './Time.jsx';
import { State } from './State.jsx';
import { formatDuration } from '../lib/format.js';

function at(iso) {
  return iso ? new Date(iso).getTime() : null;
}

function Bar({ run, from, span, now }) {
  const scheduled = at(run.scheduled) ?? from;
  const started = at(run.started);
  const resolved = at(run.resolved) ?? now;
  const percent = (time) => `${(((time - from) / span) * 100).toFixed(2)}%`;
  const width = (a, b) => `${Math.max(0.5, ((b - a) / span) * 100).toFixed(2)}%`;
  return (
    <div class="run-bar" aria-hidden="true">
      <span class="run-bar-waiting" style={{ left: percent(scheduled), width: width(scheduled, started ?? resolved) }} />
      {started && <span class={`run-bar-running state-bg-${run.state}`} style={{ left: percent(started), width: width(started, resolved) }} />}
    </div>
  );
}

export function Runs({ runs, selected }) {
  if (runs.length === 0) return <p>No runs yet: the task waits for its dependencies or to be scheduled.</p>;
  const now = Date.now();
  const from = Math.min(...runs.map((run) => at(run.scheduled) ?? now));
  const to = Math.max(...runs.map((run) => at(run.resolved) ?? now));
  const span = Math.max(1000, to - from);
  return (
    <ol class="runs">
      {runs.map((run) => {
        const started = at(run.started);
        const resolved = at(run.resolved);
        return (
          <li
            key={run.runId} class={`run ${run.runId === selected ? 'run-selected' : ''}`}
            data-testid="run" data-run-id={run.runId} data-state={run.state}
            data-reason-resolved={run.reasonResolved} data-worker-id={run.workerId}
          >
            <div class="run-head">
              <a href={`?runId=${run.runId}`} aria-current={run.runId === selected ? 'true' : undefined}>Run {run.runId}</a>
              <State state={run.state} />
              {run.reasonResolved && run.reasonResolved !== run.state && <span class="reason">{run.reasonResolved}</span>}
              {run.workerId && <span class="worker">on {run.workerGroup}/{run.workerId}</span>}
            </div>
            <Bar run={run} from={from} span={span} now={now} />
            <dl class="run-times">
              <div><dt>Scheduled</dt><dd><Time value={run.scheduled} /> ({run.reasonCreated})</dd></div>
              {run.started && <div><dt>Started</dt><dd><Time value={run.started} /> after {formatDuration(started - at(run.scheduled))}</dd></div>}
              {run.resolved && <div><dt>Resolved</dt><dd><Time value={run.resolved} />{started && ` after ${formatDuration(resolved - started)}`}</dd></div>}
              {run.takenUntil && !run.resolved && <div><dt>Claimed until</dt><dd><Time value={run.takenUntil} /></dd></div>}
            </dl>
          </li>
        );
      })}
    </ol>
  );
}
