/**
 * The `--report FILE` of `verify --full`: one NDJSON line per finding, with the job id and names
 * escaped as in logs (`escapeForLog`), never a field value. Lines are appended and synced before
 * the checkpoint that counts them is saved, and the checkpoint stores the file's length; a resumed
 * verify cuts the file back to that length, so a finding is never in the report twice.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { UsageError } from "../../errors.ts";
import { escapeForLog } from "../../telemetry/redact.ts";
import type { FindingKind } from "../verdicts.ts";

/** One finding, as written. */
export interface Finding {
  kind: FindingKind;
  jobId: Uint8Array;
  /** The workspace id (from a key name; for `invalid`, none: the raw field is a value). */
  workspace?: Uint8Array | string;
  /** Field names, for `field_missing` and `field_differs`. */
  fields?: readonly string[];
  /** For `orphan`: the old key is missing, or names another workspace. */
  reason?: string;
}

/** One NDJSON line (without the newline) for a finding (pure). */
export function findingLine(finding: Finding): string {
  const line: Record<string, unknown> = {
    job_id: escapeForLog(finding.jobId, 512),
    workspace: finding.workspace === undefined ? null : escapeForLog(finding.workspace, 512),
    kind: finding.kind,
  };
  if (finding.fields !== undefined) {
    line.fields = finding.fields.map((name) => escapeForLog(Buffer.from(name, "latin1"), 512));
  }
  if (finding.reason !== undefined) line.reason = finding.reason;
  return JSON.stringify(line);
}

/** An open report file. */
export class ReportFile {
  readonly path: string;
  #file: Deno.FsFile;
  #bytes: number;

  private constructor(path: string, file: Deno.FsFile, bytes: number) {
    this.path = path;
    this.#file = file;
    this.#bytes = bytes;
  }

  /**
   * Opens (creates) the file for writing, before Redis is touched.
   *
   * @throws {UsageError} when the path cannot be written.
   */
  static async open(path: string): Promise<ReportFile> {
    try {
      const file = await Deno.open(path, { write: true, create: true });
      const size = (await file.stat()).size;
      return new ReportFile(path, file, size);
    } catch (error) {
      const why = error instanceof Error ? error.name : "error";
      throw new UsageError(`--report ${path} cannot be written (${why})`);
    }
  }

  /** Bytes that belong to the findings written so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Starts at `bytes` (0 for a new verify, the checkpoint's length on resume).
   *
   * @returns false when the file is shorter than `bytes` (earlier findings are lost: the caller
   *   says so); it then starts over at 0.
   */
  async startAt(bytes: number): Promise<boolean> {
    const size = (await this.#file.stat()).size;
    const kept = size >= bytes;
    this.#bytes = kept ? bytes : 0;
    await this.#file.truncate(this.#bytes);
    await this.#file.seek(this.#bytes, Deno.SeekMode.Start);
    return kept;
  }

  /** Appends the findings and syncs them to disk. */
  async append(findings: readonly Finding[]): Promise<void> {
    if (findings.length === 0) return;
    let bytes = new TextEncoder().encode(findings.map(findingLine).join("\n") + "\n");
    this.#bytes += bytes.length;
    while (bytes.length > 0) bytes = bytes.subarray(await this.#file.write(bytes));
    await this.#file.sync();
  }

  /** Closes the file. */
  close(): void {
    this.#file.close();
  }
}
