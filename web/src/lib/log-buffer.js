// The lines of a log as it streams in. Past `tailBytes` the oldest lines are dropped, so a
// log of any size costs at most that much memory (and the viewer says so).

export const LOG_TAIL_BYTES = 16 * 1024 * 1024;

export class LogBuffer {
  constructor(tailBytes = LOG_TAIL_BYTES) {
    this.tailBytes = tailBytes;
    this.lines = [];
    this.start = 0;          // lines before this index were dropped but not yet compacted away
    this.partial = '';       // the last line, until its newline arrives
    this.heldChars = 0;
    this.droppedLines = 0;
    this.receivedBytes = 0;
    this.receivedLines = 0;  // complete lines received, dropped ones included
    this.decoder = new TextDecoder();
  }

  // Lines shown: the held complete lines and the partial one.
  get count() {
    return this.lines.length - this.start + (this.partial ? 1 : 0);
  }

  // Lines received so far, a partial last line included.
  get total() {
    return this.receivedLines + (this.partial ? 1 : 0);
  }

  get truncated() {
    return this.droppedLines > 0;
  }

  line(index) {
    const at = this.start + index;
    return at < this.lines.length ? this.lines[at] : this.partial;
  }

  push(bytes) {
    this.receivedBytes += bytes.length;
    this.addText(this.decoder.decode(bytes, { stream: true }));
  }

  finish() {
    this.addText(this.decoder.decode());
  }

  addText(text) {
    if (!text) return;
    const parts = (this.partial + text).split('\n');
    this.partial = parts.pop();
    for (const part of parts) {
      this.lines.push(part);
      this.heldChars += part.length + 1;
    }
    this.receivedLines += parts.length;
    this.dropOldest();
  }

  dropOldest() {
    while (this.heldChars + this.partial.length > this.tailBytes && this.start < this.lines.length) {
      this.heldChars -= this.lines[this.start].length + 1;
      this.start += 1;
      this.droppedLines += 1;
    }
    // Compacting now and then keeps dropping lines cheap (no shift() per line).
    if (this.start > 50000 && this.start > this.lines.length / 2) {
      this.lines = this.lines.slice(this.start);
      this.start = 0;
    }
  }
}

// Reads `response`'s body into `buffer`, calling `onProgress` after each chunk.
export async function readInto(response, buffer, onProgress) {
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer.push(value);
    onProgress();
  }
  buffer.finish();
  onProgress();
}
