// A timestamp, shown as a local date and time with its age on hover.

import { formatAge, formatDate } from '../lib/format.js';

export function Time({ value }) {
  if (!value) return <span>—</span>;
  return <time datetime={value} title={formatAge(value)}>{formatDate(value)}</time>;
}
