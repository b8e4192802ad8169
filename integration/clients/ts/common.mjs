// Shared by the TypeScript client scripts: command line, a recording fetch, and the one JSON
// line each script prints. The scripts are plain ES modules run by node, with no build step.
import { readFileSync } from 'node:fs';

// Astral-plane emoji, combining accent, CJK, right-to-left, a quote and a backslash: the text
// must come back byte for byte through the gateway, which never parses tool arguments.
export const DEFAULT_TEXT = 'h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\u8a9e \u{1F600} e\u0301 \u05e9\u05dc\u05d5\u05dd "q" \\';

/** The installed version of `name` (its package.json is not in every SDK's `exports`). */
export function packageVersion(name) {
  const file = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(file, 'utf8')).version;
}

/** `URL TOKEN MODE [--task-id ID] [--text TEXT]`, with MODE one of `modes`. */
export function parseArgs(script, modes) {
  const usage = `usage: ${script} URL TOKEN MODE(${modes.join('|')}) [--task-id ID] [--text TEXT]`;
  const positional = [];
  const options = { taskId: undefined, text: DEFAULT_TEXT };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--task-id') options.taskId = argv[++i];
    else if (argv[i] === '--text') options.text = argv[++i];
    else positional.push(argv[i]);
  }
  const [url, token, mode] = positional;
  if (positional.length !== 3 || !modes.includes(mode) || options.text === undefined) {
    console.error(usage);
    process.exit(2);
  }
  return { url, token, mode, ...options };
}

/** Headers the gateway needs on every request: the bearer token and the agent's task. */
export function gatewayHeaders({ token, taskId }) {
  const headers = { Authorization: `Bearer ${token}` };
  if (taskId) headers['Mcp-Task-Id'] = taskId;
  return headers;
}

/** A fetch that records every exchange's method and status, and the session ids sent. */
export function recordingFetch() {
  const wire = { exchanges: [], sentSessions: [] };
  const fetchLike = async (url, init = {}) => {
    const sid = new Headers(init.headers).get('mcp-session-id');
    if (sid) wire.sentSessions.push(sid);
    const response = await fetch(url, init);
    wire.exchanges.push({ method: init.method ?? 'GET', status: response.status });
    return response;
  };
  return { wire, fetchLike };
}

/** The text of a tool result, or a thrown error when the tool failed. */
export function toolText(result) {
  if (result.isError) throw new Error(`tool error: ${JSON.stringify(result.content)}`);
  return result.content[0].text;
}

/** Runs `body`, prints its result as one JSON line, and exits non-zero on any failure. */
export async function main(script, mode, body) {
  try {
    const out = await body();
    process.stdout.write(JSON.stringify(out) + '\n');
    process.exit(0);
  } catch (e) {
    console.error(`${script} (${mode}) failed:`, e);
    process.exit(1);
  }
}

/** The session id the client held, after checking it never switched mid-session. */
export function heldSession(wire) {
  if (new Set(wire.sentSessions).size > 1) {
    throw new Error(`the client switched session ids mid-session: ${wire.sentSessions}`);
  }
  return wire.sentSessions.at(-1) ?? null;
}
