// node bench/v8/top.mjs PROFILE.cpuprofile [FUNCTION_PREFIX]: the Wasm functions of a
// `node --cpu-prof` profile by their share of the module's samples (self time), and with a
// prefix, the callers of the functions whose names start with it (see README.md).
import { readFileSync } from 'node:fs';

const [file, prefix] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/v8/top.mjs PROFILE.cpuprofile [FUNCTION_PREFIX]');
  process.exit(2);
}
const profile = JSON.parse(readFileSync(file, 'utf8'));
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const parentOf = new Map();
for (const n of profile.nodes) for (const child of n.children ?? []) parentOf.set(child, n.id);
const isWasm = (id) => (nodes.get(id).callFrame.url ?? '').startsWith('wasm://');
// Rust's legacy mangling (_ZN6filter5audit4json17h…E) made readable (filter::audit::json).
const demangle = (name) => {
  if (!name.startsWith('_ZN')) return name;
  const parts = [];
  for (let at = 3; name[at] !== 'E' && at < name.length; ) {
    const digits = /^\d+/.exec(name.slice(at))[0];
    at += digits.length;
    parts.push(name.slice(at, at + Number(digits)));
    at += Number(digits);
  }
  if (/^h[0-9a-f]{16}$/.test(parts.at(-1))) parts.pop();
  const escapes = { $LT$: '<', $GT$: '>', $u20$: ' ', $RF$: '&', $C$: ',', $u27$: "'", $BP$: '*' };
  return parts.join('::').replace(/\$[A-Za-z0-9]+\$/g, (e) => escapes[e] ?? e).replaceAll('..', '::');
};
const nameOf = (id) => demangle(nodes.get(id).callFrame.functionName || '(anonymous)');

const samples = new Map();
for (const id of profile.samples) if (isWasm(id)) samples.set(id, (samples.get(id) ?? 0) + 1);
const total = [...samples.values()].reduce((a, b) => a + b, 0);
if (total === 0) {
  console.error(`${file}: no samples in Wasm code (a module without its name section shows no names)`);
  process.exit(1);
}

const tally = (key) => {
  const by = new Map();
  for (const [id, n] of samples) {
    const k = key(id);
    if (k !== undefined) by.set(k, (by.get(k) ?? 0) + n);
  }
  return [...by].sort((a, b) => b[1] - a[1]);
};
const show = (rows, limit) => {
  for (const [name, n] of rows.slice(0, limit)) console.log(`${((100 * n) / total).toFixed(1).padStart(5)} %  ${name}`);
};

console.log(`${total} samples in the module's code; self time by function:`);
show(tally(nameOf), 30);
if (prefix) {
  console.log(`\ncallers of ${prefix}*:`);
  show(tally((id) => (nameOf(id).startsWith(prefix) ? nameOf(parentOf.get(id) ?? id) : undefined)), 15);
}
