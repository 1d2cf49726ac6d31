/**
 * The docs hold together: README.md stays short enough to read on a screen and links every page
 * of docs/, and every relative link and `#anchor` in README.md and docs/*.md names a file that
 * exists and a heading that is in it (GitHub's anchor rule).
 */
import assert from "node:assert/strict";
import { dirname, join, normalize, relative } from "node:path";

const ROOT = normalize(new URL("../", import.meta.url).pathname);
const README_MAX_LINES = 250;

function docFiles(): string[] {
  const pages = [...Deno.readDirSync(join(ROOT, "docs"))]
    .filter((entry) => entry.isFile && entry.name.endsWith(".md"))
    .map((entry) => join(ROOT, "docs", entry.name))
    .sort();
  return [join(ROOT, "README.md"), ...pages];
}

/** The text outside fenced code blocks, with inline code spans blanked (no links in code). */
function prose(markdown: string): string {
  let fenced = false;
  const lines = markdown.split("\n").map((line) => {
    if (/^\s*```/.test(line)) {
      fenced = !fenced;
      return "";
    }
    return fenced ? "" : line;
  });
  return lines.join("\n").replace(/`[^`]*`/g, "code");
}

/** GitHub's heading anchor: lowercase, punctuation other than '-' and '_' dropped, spaces → '-'. */
function anchorOf(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
}

/** Every anchor of a Markdown file; a repeated heading gets -1, -2, … as on GitHub. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (/^\s*```/.test(line)) fenced = !fenced;
    const heading = fenced ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!heading) continue;
    const base = anchorOf(heading[1]!.replace(/`/g, ""));
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    result.add(count === 0 ? base : `${base}-${count}`);
  }
  return result;
}

interface Link {
  file: string;
  target: string;
}

function relativeLinks(file: string): Link[] {
  const text = prose(Deno.readTextFileSync(file));
  return [...text.matchAll(/\[[^\]]*\]\(([^)\s]+)\)/g)]
    .map((match) => ({ file, target: match[1]! }))
    .filter((link) => !/^[a-z][a-z0-9+.-]*:/i.test(link.target));
}

/** Why a link does not resolve, or null when it does. */
function brokenReason(link: Link): string | null {
  const [path = "", anchor] = link.target.split("#", 2);
  const targetFile = path === "" ? link.file : normalize(join(dirname(link.file), path));
  let stat: Deno.FileInfo;
  try {
    stat = Deno.statSync(targetFile);
  } catch {
    return `no file ${relative(ROOT, targetFile)}`;
  }
  if (anchor === undefined) return null;
  if (!stat.isFile || !targetFile.endsWith(".md")) return `an anchor into ${path}, not Markdown`;
  if (!anchors(Deno.readTextFileSync(targetFile)).has(anchor)) {
    return `no heading #${anchor} in ${relative(ROOT, targetFile)}`;
  }
  return null;
}

Deno.test("docs: the anchor rule follows GitHub's", () => {
  assert.equal(
    anchorOf("Running N runners (Kubernetes Indexed Job)"),
    "running-n-runners-kubernetes-indexed-job",
  );
  assert.equal(
    anchorOf("backfill verify --full: the exact proof"),
    "backfill-verify---full-the-exact-proof",
  );
  assert.equal(anchorOf("The call share (70% of the budget)"), "the-call-share-70-of-the-budget");
  assert.equal(anchorOf("Health (/healthz)"), "health-healthz");
  assert.deepEqual([...anchors("# A\n## B\n```\n# not a heading\n```\n## B\n")], ["a", "b", "b-1"]);
});

Deno.test("docs: every relative link and anchor in README.md and docs/ resolves", () => {
  const links = docFiles().flatMap(relativeLinks);
  assert.ok(
    links.length > 50,
    `expected the pages to link each other, found ${links.length} links`,
  );
  const broken = links.flatMap((link) => {
    const reason = brokenReason(link);
    return reason === null ? [] : [`${relative(ROOT, link.file)}: (${link.target}) ${reason}`];
  });
  assert.deepEqual(broken, []);
});

Deno.test("docs: README.md fits on a screen and links every docs page", () => {
  const readme = Deno.readTextFileSync(join(ROOT, "README.md"));
  const lines = readme.trimEnd().split("\n").length;
  assert.ok(
    lines <= README_MAX_LINES,
    `README.md has ${lines} lines (at most ${README_MAX_LINES})`,
  );
  const linked = new Set(
    relativeLinks(join(ROOT, "README.md")).map((link) => link.target.split("#")[0]),
  );
  const pages = docFiles().slice(1).map((file) => relative(ROOT, file));
  assert.deepEqual(pages.filter((page) => !linked.has(page)), []);
});
