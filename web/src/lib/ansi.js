// ANSI escape sequences in log lines: SGR colours and styles become segments with CSS classes
// (16 colours) or inline colours (256-colour and true-colour); every other escape is dropped.
// Lines are parsed one at a time, only when shown, so the style state starts afresh on each
// line (build tools reset theirs at line ends). A carriage return inside a line (a progress
// bar redrawing itself) keeps only what was written after it.

// CSI `ESC [ params final`, OSC `ESC ] … (BEL | ESC \)`, a charset designation `ESC ( B`,
// or any other two-character escape.
const ESCAPE = /\x1b(?:\[([0-9;:?]*)([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[()*+].?|[@-Z\\-_]|.?)/g;
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/g;

function lastRedraw(line) {
  const trimmed = line.endsWith('\r') ? line.slice(0, -1) : line;
  const at = trimmed.lastIndexOf('\r');
  return at < 0 ? trimmed : trimmed.slice(at + 1);
}

export function stripAnsi(line) {
  return lastRedraw(line).replace(ESCAPE, '').replace(CONTROL, '');
}

// The colour of 256-colour index `n`, as CSS.
function color256(n) {
  if (n < 16) return null;  // the 16 colours go through classes
  if (n < 232) {
    const steps = [0, 95, 135, 175, 215, 255];
    const i = n - 16;
    return `rgb(${steps[Math.floor(i / 36)]},${steps[Math.floor(i / 6) % 6]},${steps[i % 6]})`;
  }
  const grey = 8 + (n - 232) * 10;
  return `rgb(${grey},${grey},${grey})`;
}

function applySgr(style, params) {
  const codes = params === '' ? [0] : params.split(/[;:]/).map((p) => Number(p) || 0);
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    if (code === 0) Object.assign(style, { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false });
    else if (code === 1) style.bold = true;
    else if (code === 2) style.dim = true;
    else if (code === 3) style.italic = true;
    else if (code === 4) style.underline = true;
    else if (code === 7) style.inverse = true;
    else if (code === 22) style.bold = style.dim = false;
    else if (code === 23) style.italic = false;
    else if (code === 24) style.underline = false;
    else if (code === 27) style.inverse = false;
    else if (code >= 30 && code <= 37) style.fg = code - 30;
    else if (code >= 90 && code <= 97) style.fg = code - 90 + 8;
    else if (code === 39) style.fg = null;
    else if (code >= 40 && code <= 47) style.bg = code - 40;
    else if (code >= 100 && code <= 107) style.bg = code - 100 + 8;
    else if (code === 49) style.bg = null;
    else if (code === 38 || code === 48) {
      const key = code === 38 ? 'fg' : 'bg';
      if (codes[i + 1] === 5) {
        const n = codes[i + 2] ?? 0;
        style[key] = n < 16 ? n : color256(n);
        i += 2;
      } else if (codes[i + 1] === 2) {
        style[key] = `rgb(${codes[i + 2] ?? 0},${codes[i + 3] ?? 0},${codes[i + 4] ?? 0})`;
        i += 4;
      }
    }
  }
}

function segmentOf(text, style) {
  const [fg, bg] = style.inverse ? [style.bg ?? 'inverse-fg', style.fg ?? 'inverse-bg'] : [style.fg, style.bg];
  const classes = [];
  const css = {};
  if (typeof fg === 'number') classes.push(`ansi-fg${fg}`);
  else if (fg === 'inverse-fg') classes.push('ansi-inverse-fg');
  else if (fg) css.color = fg;
  if (typeof bg === 'number') classes.push(`ansi-bg${bg}`);
  else if (bg === 'inverse-bg') classes.push('ansi-inverse-bg');
  else if (bg) css.backgroundColor = bg;
  if (style.bold) classes.push('ansi-bold');
  if (style.dim) classes.push('ansi-dim');
  if (style.italic) classes.push('ansi-italic');
  if (style.underline) classes.push('ansi-underline');
  return { text, className: classes.join(' '), style: css };
}

// A line as `[{text, className, style}]`; a line without escapes is one plain segment.
export function parseAnsi(line) {
  const text = lastRedraw(line);
  if (!text.includes('\x1b')) return [{ text: text.replace(CONTROL, ''), className: '', style: {} }];
  const segments = [];
  const style = {};
  let at = 0;
  for (const found of text.matchAll(ESCAPE)) {
    if (found.index > at) segments.push(segmentOf(text.slice(at, found.index).replace(CONTROL, ''), style));
    if (found[2] === 'm') applySgr(style, found[1]);
    at = found.index + found[0].length;
  }
  if (at < text.length) segments.push(segmentOf(text.slice(at).replace(CONTROL, ''), style));
  return segments.filter((segment) => segment.text !== '');
}
