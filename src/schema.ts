/**
 * The one place that builds and parses key names and decides what a valid workspace id is. Every
 * Lua script builds new keys through {@linkcode KEY_LUA} from {@linkcode KeySchema.luaSpec}. Key
 * names are bytes: a job id need not be valid UTF-8, and it is never re-encoded.
 *
 * @module
 */
import { Buffer } from "node:buffer";

export const DEFAULT_FROM = "ai:jobs:{job_id}";
export const DEFAULT_TO = "ai:job:{workspace_id}:{job_id}";
export const WORKSPACE_FIELD = "workspace_id";
/** Default validity rule for workspace ids (docs/safety.md). */
export const DEFAULT_WORKSPACE_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$";
/** The default rule in Lua (which has no `{0,63}`); a test holds the two equal. */
export const DEFAULT_WORKSPACE_LUA: Readonly<{ pattern: string; maxLength: number }> = {
  pattern: "^[A-Za-z0-9][A-Za-z0-9_%-]*$",
  maxLength: 64,
};

/** A parsed template: `literals[0] {names[0]} literals[1] … {names[n-1]} literals[n]`. */
export interface Template {
  readonly text: string;
  readonly literals: readonly Buffer[];
  readonly names: readonly string[];
}

/** A template that cannot be used; its message is the one-line reason. */
export class TemplateError extends Error {
  override name = "TemplateError";
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Parses a template: `{name}` is a placeholder, `{{name}}` one inside a Redis hash tag.
 *
 * @throws {TemplateError} for a stray brace, a bad or repeated name, or two placeholders with no
 *   literal between them (where one ends would be a guess).
 */
function parseTemplate(flag: string, text: string): Template {
  const literals: string[] = [""];
  const names: string[] = [];
  const token = /\{\{([^{}]*)\}\}|\{([^{}]*)\}|[{}]/g;
  let at = 0;
  for (const match of text.matchAll(token)) {
    literals[literals.length - 1] += text.slice(at, match.index);
    at = match.index + match[0].length;
    const name = match[1] ?? match[2];
    if (name === undefined) {
      throw new TemplateError(
        `${flag} '${text}': a stray '${match[0]}' (a placeholder is {name}, a hash tag {{name}})`,
      );
    }
    if (!NAME.test(name)) throw new TemplateError(`${flag} '${text}': {${name}} is not a name`);
    if (names.includes(name)) {
      throw new TemplateError(`${flag} '${text}': {${name}} appears twice`);
    }
    const tagged = match[1] !== undefined;
    if (tagged) literals[literals.length - 1] += "{";
    if (names.length > 0 && literals.at(-1) === "") {
      throw new TemplateError(
        `${flag} '${text}': {${names.at(-1)}}{${name}} need a literal between them`,
      );
    }
    names.push(name);
    literals.push(tagged ? "}" : "");
  }
  literals[literals.length - 1] += text.slice(at);
  if (names.length === 0) throw new TemplateError(`${flag} '${text}': no placeholder`);
  return { text, literals: literals.map((l) => Buffer.from(l)), names };
}

/** A template's SCAN MATCH pattern. */
function globOf(literals: readonly Buffer[]): string {
  return literals.map((literal) => escapeGlob(literal.toString())).join("*");
}

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

/**
 * Strict UTF-8 that keeps every byte: `ignoreBOM` stops TextDecoder from silently dropping a
 * leading byte-order mark, which would turn the id "\uFEFFwsA" into another tenant's "wsA".
 */
const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Where a `--to` placeholder takes its value from. */
type Source = { capture: number } | { field: number };

/** The flags `--from`, `--to`, `--workspace-pattern` and `--pattern NAME=RE`. */
export interface KeySchemaOptions {
  from?: string;
  to?: string;
  workspacePattern?: string;
  patterns?: Readonly<Record<string, string>>;
}

/**
 * The mapping from old key names to new ones, and the rules its field values must meet.
 * `--from` placeholders are cut from the old name (each ends at the first occurrence of the
 * literal after it); the other `--to` placeholders are hash fields ({@linkcode fields}), the
 * first of them the workspace (the `--workspace` filter, the metrics label).
 */
export class KeySchema {
  readonly from: Template;
  readonly to: Template;
  /** The hash fields the new name reads, in `--to` order: the order the scripts use. */
  readonly fields: readonly string[];
  /** SCAN MATCH pattern of old keys. */
  readonly oldMatch: string;
  /** SCAN MATCH pattern of new keys. */
  readonly newMatch: string;
  /** The workspace rule: the rule of the first field. */
  readonly pattern: RegExp;
  /**
   * Every field is under the default rule: the scripts check values in Lua; otherwise the client
   * checks them and the scripts that they are unchanged.
   */
  readonly isDefaultRule: boolean;
  readonly isDefaultMapping: boolean;
  /** The mapping as {@linkcode KEY_LUA} reads it: one ARGV entry. */
  readonly luaSpec: Buffer;
  readonly #rules: readonly RegExp[];
  readonly #sources: readonly Source[];
  /** The literal after each field in `--to`. */
  readonly #afterFields: readonly string[];

  /**
   * @throws {TemplateError} for a mapping that is ambiguous or cannot be used (see
   *   {@linkcode checkMapping}), or a rule for a field the new template does not read.
   * @throws {SyntaxError} when a pattern is not a valid regular expression.
   */
  constructor(options: KeySchemaOptions = {}) {
    this.from = parseTemplate("--from", options.from ?? DEFAULT_FROM);
    this.to = parseTemplate("--to", options.to ?? DEFAULT_TO);
    this.isDefaultMapping = this.from.text === DEFAULT_FROM && this.to.text === DEFAULT_TO;
    const fields: string[] = [];
    this.#sources = this.to.names.map((name) => {
      const capture = this.from.names.indexOf(name);
      if (capture >= 0) return { capture };
      fields.push(name);
      return { field: fields.length - 1 };
    });
    this.fields = fields;
    const first = fields[0];
    for (const name of Object.keys(options.patterns ?? {})) {
      if (!fields.includes(name) || name === WORKSPACE_FIELD) {
        throw new TemplateError(
          name === WORKSPACE_FIELD
            ? `--pattern ${name}=…: the rule for ${name} is --workspace-pattern`
            : `--pattern ${name}=…: {${name}} is not a hash field --to '${this.to.text}' reads`,
        );
      }
    }
    // Without any field, checkMapping below names the problem.
    if (options.workspacePattern !== undefined && first && !fields.includes(WORKSPACE_FIELD)) {
      throw new TemplateError(
        `--workspace-pattern is the rule for workspace_id, which --to '${this.to.text}' does not read (--pattern ${first}=RE)`,
      );
    }
    const sources = fields.map((field) =>
      field === WORKSPACE_FIELD
        ? options.workspacePattern ?? DEFAULT_WORKSPACE_PATTERN
        : options.patterns?.[field] ?? DEFAULT_WORKSPACE_PATTERN
    );
    this.#rules = sources.map((source) => new RegExp(source, "u"));
    this.pattern = this.#rules[0]!;
    this.isDefaultRule = sources.every((source) => source === DEFAULT_WORKSPACE_PATTERN);
    this.oldMatch = globOf(this.from.literals);
    this.newMatch = globOf(this.to.literals);
    checkMapping(this, new Set(fields.filter((_, i) => sources[i] === DEFAULT_WORKSPACE_PATTERN)));
    this.#afterFields = fields.map((field) => {
      const at = this.to.names.indexOf(field);
      return at + 1 < this.to.names.length ? this.to.literals[at + 1]!.toString() : "";
    });
    this.luaSpec = luaSpecOf(fields, this.from, this.#sources, this.to.literals);
  }

  /** The hash field that holds the workspace id: the first field. */
  get workspaceField(): string {
    return this.fields[0]!;
  }

  /** The mapping and its rules as the checkpoint's and verify's parameters hold them. */
  get fingerprint(): { pattern: string; mapping?: string; patterns?: Record<string, string> } {
    const pattern = this.pattern.source;
    if (this.isDefaultMapping) return { pattern };
    const mapping = `${this.from.text} -> ${this.to.text}`;
    if (this.fields.length === 1) return { pattern, mapping };
    const patterns = Object.fromEntries(
      this.fields.slice(1).map((field, i) => [field, this.#rules[i + 1]!.source]),
    );
    return { pattern, mapping, patterns };
  }

  /** What every old key name starts with. */
  get oldPrefix(): Buffer {
    return this.from.literals[0]!;
  }

  /** What every new key name starts with. */
  get newPrefix(): Buffer {
    return this.to.literals[0]!;
  }

  /**
   * The old key without {@linkcode oldPrefix} (by default the job id), what logs, checkpoints and
   * reports name a job by; `undefined` when `oldKey` does not start with it.
   */
  idOf(oldKey: Uint8Array): Buffer | undefined {
    // Called for every key read: no wrapper or slice before the answer.
    const prefix = this.oldPrefix;
    if (oldKey.length < prefix.length) return undefined;
    for (let i = 0; i < prefix.length; i++) {
      if (oldKey[i] !== prefix[i]) return undefined;
    }
    return bufferOf(oldKey).subarray(prefix.length);
  }

  /** The placeholders' values of an old key; `undefined` when it does not fit or one is empty. */
  oldParts(oldKey: Uint8Array): Buffer[] | undefined {
    return partsOf(this.from.literals, bufferOf(oldKey));
  }

  /** The old key of the old template's placeholder values. */
  oldKeyOf(parts: readonly Uint8Array[]): Buffer {
    return join(this.from.literals, parts);
  }

  /**
   * The new key of an old key and the values of {@linkcode fields}, byte-exact; `undefined` when
   * the old key does not fit, or a value holds the literal after it (the name would be ambiguous).
   */
  newKeyOf(oldKey: Uint8Array, values: readonly (Uint8Array | string)[]): Buffer | undefined {
    const parts = this.oldParts(oldKey);
    if (parts === undefined) return undefined;
    const filled = this.#sources.map((s) =>
      "capture" in s ? parts[s.capture]! : Buffer.from(values[s.field] ?? "")
    );
    for (let i = 0; i + 1 < filled.length; i++) {
      if (filled[i]!.length === 0 || filled[i]!.includes(this.to.literals[i + 1]!)) {
        return undefined;
      }
    }
    return join(this.to.literals, filled);
  }

  /**
   * The old key a new key was copied from, and the values of {@linkcode fields} its name holds
   * (latin1: one char per byte); `undefined` when it is not a new key.
   */
  parseNewKey(
    newKey: Uint8Array,
  ): { oldKey: Buffer; values: string[]; workspace: string } | undefined {
    const parts = partsOf(this.to.literals, bufferOf(newKey));
    if (parts === undefined) return undefined;
    const captures: Buffer[] = new Array(this.from.names.length);
    const values: string[] = new Array(this.fields.length);
    this.#sources.forEach((s, i) => {
      if ("capture" in s) captures[s.capture] = parts[i]!;
      else values[s.field] = parts[i]!.toString("latin1");
    });
    return { oldKey: join(this.from.literals, captures), values, workspace: values[0] ?? "" };
  }

  /** True when `newKey` reads back to `oldKey` with valid field values (the only reading). */
  isCopyOf(newKey: Uint8Array, oldKey: Uint8Array): boolean {
    const parsed = this.parseNewKey(newKey);
    return parsed !== undefined && parsed.oldKey.equals(oldKey) &&
      this.checkValues(parsed.values.map((v) => Buffer.from(v, "latin1"))) !== undefined;
  }

  /** SCAN MATCH pattern of one workspace's new keys (glob characters in the id match literally). */
  newMatchFor(workspaceId: string): string {
    const at = this.to.names.indexOf(this.workspaceField);
    return this.to.literals.map((literal, i) =>
      (i === 0 ? "" : i - 1 === at ? escapeGlob(workspaceId) : "*") + escapeGlob(literal.toString())
    ).join("");
  }

  /** The workspace id as a string when valid (see {@linkcode checkValues}). */
  checkWorkspace(raw: Uint8Array | string | null | undefined): string | undefined {
    return this.#check(0, raw);
  }

  /**
   * The values of {@linkcode fields} as strings when each is valid under its rule; `undefined`
   * when any is not. Bytes that are not UTF-8, or hold `:` or the literal after the field in
   * `--to` (the new key would be ambiguous), are never valid.
   */
  checkValues(raws: readonly (Uint8Array | string | null | undefined)[]): string[] | undefined {
    if (raws.length !== this.fields.length) return undefined;
    const values: string[] = new Array(raws.length);
    for (let i = 0; i < raws.length; i++) {
      const value = this.#check(i, raws[i]);
      if (value === undefined) return undefined;
      values[i] = value;
    }
    return values;
  }

  #check(field: number, raw: Uint8Array | string | null | undefined): string | undefined {
    if (raw === null || raw === undefined) return undefined;
    let text: string;
    try {
      text = typeof raw === "string" ? raw : STRICT_UTF8.decode(raw);
    } catch {
      return undefined;
    }
    if (text.length === 0 || text.includes(":")) return undefined;
    const after = this.#afterFields[field] ?? "";
    if (after !== "" && text.includes(after)) return undefined;
    return this.#rules[field]?.test(text) ? text : undefined;
  }
}

/** True when `keyWorkspace` (latin1, from {@linkcode KeySchema.parseNewKey}) is `workspaceId`. */
export function isSameWorkspace(keyWorkspace: string, workspaceId: string): boolean {
  return Buffer.from(keyWorkspace, "latin1").equals(Buffer.from(workspaceId));
}

/** What the default rule lets a value hold: a literal made only of these could occur in one. */
const DEFAULT_RULE_CHARS = /^[A-Za-z0-9_-]*$/;

/**
 * Refuses a mapping that is ambiguous or cannot be used, before anything is read: `--to` must use
 * every `--from` placeholder and read at least one field; a placeholder followed by a literal in
 * `--to` must not be able to hold it (a `--from` placeholder never holds its own next literal, and
 * the last one holds anything; a field under the default rule, `defaultRule`, holds only
 * `[A-Za-z0-9_-]`; other rules are checked per key); no new key may match `--from`.
 *
 * @throws {TemplateError} naming the first problem found.
 */
function checkMapping(
  schema: Pick<KeySchema, "from" | "to" | "fields" | "oldMatch" | "newMatch">,
  defaultRule: ReadonlySet<string>,
): void {
  const { from, to, fields } = schema;
  const where = `--to '${to.text}'`;
  for (const name of from.names) {
    if (!to.names.includes(name)) {
      throw new TemplateError(
        `${where} does not use {${name}} of --from: two old keys could map to one new key`,
      );
    }
  }
  if (fields.length === 0) {
    throw new TemplateError(
      `${where} reads no hash field; it must read at least one (the workspace)`,
    );
  }
  to.names.forEach((name, i) => {
    const next = to.literals[i + 1]!.toString("latin1");
    if (i + 1 === to.names.length) return; // the last one ends where the name's tail begins
    const capture = from.names.indexOf(name);
    let holds: boolean;
    if (capture < 0) holds = defaultRule.has(name) && DEFAULT_RULE_CHARS.test(next);
    else {
      const own = from.literals[capture + 1]!.toString("latin1");
      const last = capture + 1 === from.names.length;
      holds = last || !next.includes(own);
    }
    if (holds) {
      throw new TemplateError(
        `${where}: {${name}} could hold '${next}', the literal after it, so a new key could be read two ways`,
      );
    }
  });
  if (globsOverlap(schema.oldMatch, schema.newMatch)) {
    throw new TemplateError(
      `${where} can produce names that match --from '${from.text}': the run would copy its own copies`,
    );
  }
}

/** True when some name matches both globs (only `*` is special; the rest is escaped). */
export function globsOverlap(a: string, b: string): boolean {
  // null: a wildcard; a string: one character, compared as itself.
  const tokens = (glob: string) => {
    const out: (string | null)[] = [];
    for (let i = 0; i < glob.length; i++) {
      if (glob[i] === "\\") out.push(glob[++i] ?? "");
      else out.push(glob[i] === "*" ? null : glob[i]!);
    }
    return out;
  };
  const x = tokens(a);
  const y = tokens(b);
  const memo = new Map<number, boolean>();
  const meet = (i: number, j: number): boolean => {
    const at = i * (y.length + 1) + j;
    const known = memo.get(at);
    if (known !== undefined) return known;
    let result: boolean;
    if (i === x.length && j === y.length) result = true;
    else if (i < x.length && x[i] === null) {
      result = meet(i + 1, j) || (j < y.length && meet(i, j + 1));
    } else if (j < y.length && y[j] === null) {
      result = meet(i, j + 1) || (i < x.length && meet(i + 1, j));
    } else result = i < x.length && j < y.length && x[i] === y[j] && meet(i + 1, j + 1);
    memo.set(at, result);
    return result;
  };
  return meet(0, 0);
}

function bufferOf(key: Uint8Array): Buffer {
  return key instanceof Buffer ? key : Buffer.from(key.buffer, key.byteOffset, key.byteLength);
}

function join(literals: readonly Buffer[], parts: readonly Uint8Array[]): Buffer {
  const pieces: Uint8Array[] = [literals[0]!];
  parts.forEach((part, i) => pieces.push(part, literals[i + 1]!));
  return Buffer.concat(pieces);
}

/** The same cut as `key_parts` in {@linkcode KEY_LUA}, so both sides agree on every name. */
function partsOf(literals: readonly Buffer[], key: Buffer): Buffer[] | undefined {
  const head = literals[0]!;
  if (key.length < head.length || !key.subarray(0, head.length).equals(head)) return undefined;
  const parts: Buffer[] = [];
  let at = head.length;
  for (let i = 1; i < literals.length; i++) {
    const literal = literals[i]!;
    let stop: number;
    if (i + 1 < literals.length) {
      stop = key.indexOf(literal, at);
    } else {
      stop = key.length - literal.length;
      if (stop < at || !key.subarray(stop).equals(literal)) stop = -1;
    }
    if (stop < 0 || stop === at) return undefined;
    parts.push(key.subarray(at, stop));
    at = stop + literal.length;
  }
  return parts;
}

/**
 * {@linkcode KeySchema.luaSpec}: `<length>:<bytes>` items: the field count, the fields, the old
 * literal count, the old literals, then `--to` as literal, source, …, literal, where a source is
 * `i` (the i-th old placeholder) or `-i` (the i-th field value).
 */
function luaSpecOf(
  fields: readonly string[],
  from: Template,
  sources: readonly Source[],
  to: readonly Buffer[],
): Buffer {
  const items: Buffer[] = [
    Buffer.from(String(fields.length)),
    ...fields.map((field) => Buffer.from(field)),
    Buffer.from(String(from.literals.length)),
    ...from.literals,
  ];
  to.forEach((literal, i) => {
    if (i > 0) {
      const source = sources[i - 1]!;
      items.push(
        Buffer.from("capture" in source ? `${source.capture + 1}` : `-${source.field + 1}`),
      );
    }
    items.push(literal);
  });
  return Buffer.concat(items.flatMap((item) => [Buffer.from(`${item.length}:`), item]));
}

/**
 * Lua: `local key_parts, new_key, fields, read_others = key_mapping(spec)` reads
 * {@linkcode KeySchema.luaSpec}. `key_parts(old)` cuts an old name into its placeholders' values
 * (nil when it does not fit; the table is reused); `new_key(parts, values)` builds the new name
 * (nil when a value holds the literal after it). Both are closures made for the mapping's shape:
 * they run for every key, where a loop over the template would cost more than the rest.
 */
export const KEY_LUA = `
local key_sub, key_find = string.sub, string.find
local function key_mapping(spec)
  local items, at = {}, 1
  while at <= #spec do
    local colon = key_find(spec, ":", at, true)
    local len = tonumber(key_sub(spec, at, colon - 1))
    items[#items + 1] = key_sub(spec, colon + 1, colon + len)
    at = colon + len + 1
  end
  local k = tonumber(items[1])
  local fields = {}
  for i = 1, k do fields[i] = items[1 + i] end
  local n = tonumber(items[k + 2])
  local from, to, parts = {}, {}, {}
  for i = 1, n do from[i] = items[k + 2 + i] end
  for i = k + n + 3, #items do
    local item = items[i]
    if (i - k - n) % 2 == 0 then item = tonumber(item) end
    to[#to + 1] = item
  end
  local key_parts, new_key
  local head, tail = from[1], from[n]
  local skip = #head
  if n == 2 and tail == "" then
    -- One placeholder that ends the name (ai:jobs:{job_id}).
    key_parts = function(key)
      if key_sub(key, 1, skip) ~= head then return nil end
      local part = key_sub(key, skip + 1)
      if part == "" then return nil end
      parts[1] = part
      return parts
    end
  else
    key_parts = function(key)
      if key_sub(key, 1, skip) ~= head then return nil end
      local at = skip + 1
      for i = 2, n do
        local lit, stop = from[i], nil
        if i < n then
          stop = key_find(key, lit, at, true)
        else
          stop = #key - #lit + 1
          if stop < at or key_sub(key, stop) ~= lit then stop = nil end
        end
        if not stop or stop == at then return nil end
        parts[i - 1] = key_sub(key, at, stop - 1)
        at = stop + #lit
      end
      return parts
    end
  end
  local m = #to
  if m == 5 then
    -- Two placeholders (ai:job:{workspace_id}:{job_id}): one concatenation.
    local l1, s2, l3, s4, l5 = to[1], to[2], to[3], to[4], to[5]
    new_key = function(p, values)
      local a, b
      if s2 > 0 then a = p[s2] else a = values[-s2] end
      if s4 > 0 then b = p[s4] else b = values[-s4] end
      if a == "" or key_find(a, l3, 1, true) then return nil end
      return l1 .. a .. l3 .. b .. l5
    end
  else
    local buf = {}
    new_key = function(p, values)
      for i = 1, m, 2 do buf[i] = to[i] end
      for i = 2, m, 2 do
        local source, v = to[i], nil
        if source > 0 then v = p[source] else v = values[-source] end
        if i + 1 < m and (v == "" or key_find(v, to[i + 1], 1, true)) then return nil end
        buf[i] = v
      end
      return table.concat(buf, "", 1, m)
    end
  end
  -- Reads the fields after the workspace into values[2..k]; false when one is missing.
  local function read_others(key, values)
    for j = 2, k do
      local v = redis.call("HGET", key, fields[j])
      if not v then return false end
      values[j] = v
    end
    return true
  end
  return key_parts, new_key, fields, read_others
end
`;
