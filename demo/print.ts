/**
 * Output for the demo (the lint config forbids `console`): whole lines, written synchronously so
 * they interleave with the child processes' inherited output in the order they happen.
 *
 * @module
 */

const encoder = new TextEncoder();

function writeAll(stream: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(stream.writeSync(bytes));
}

/** Writes `lines` to stdout, each followed by a newline (an empty line when called bare). */
export function print(...lines: string[]): void {
  writeAll(Deno.stdout, lines.length === 0 ? "\n" : lines.map((line) => line + "\n").join(""));
}

/** Writes `line` and a newline to stderr. */
export function printError(line: string): void {
  writeAll(Deno.stderr, line + "\n");
}
