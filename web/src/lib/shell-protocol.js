// The frames of an interactive session's websocket (schemas/interactive.md): binary, the
// opcode in byte 0, docker-exec-websocket-server's opcodes.

export const OP = {
  STDIN: 0, STDOUT: 1, STDERR: 2, RESIZE: 50,
  RESUME: 100, PAUSE: 101, END: 102,
  STOPPED: 200, SHUTDOWN: 201, ERROR: 202,
};

export function frame(opcode, payload) {
  const bytes = new Uint8Array(1 + (payload ? payload.length : 0));
  bytes[0] = opcode;
  if (payload) bytes.set(payload, 1);
  return bytes;
}

// resize: u16le rows, u16le cols.
export function resizeFrame(rows, cols) {
  const payload = new Uint8Array(4);
  const view = new DataView(payload.buffer);
  view.setUint16(0, rows, true);
  view.setUint16(2, cols, true);
  return frame(OP.RESIZE, payload);
}

// stopped: i32le exit status (docker-exec-websocket-server sent one byte).
export function exitStatus(payload) {
  if (payload.length >= 4) return new DataView(payload.buffer, payload.byteOffset, 4).getInt32(0, true);
  return payload[0] ?? null;
}
