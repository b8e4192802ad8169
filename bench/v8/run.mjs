#!/usr/bin/env node
// An Envoy-free microbenchmark of a proxy-wasm HTTP filter's own Wasm code in V8 (Node.js).
//
//   node bench/v8/run.mjs [WASM] [MODE] [N] [PROBE_CONFIG]
//
//   WASM   the proxy-wasm module (default target/wasm32-wasip1/release/filter.wasm)
//   MODE   modern (default) | legacy | probe
//   N      measured requests per repetition (default 100000)
//   PROBE_CONFIG  the probe's plugin configuration in probe mode (default floor)
//
// Environment: V8_BENCH_WARMUP (20000 requests), V8_BENCH_REPS (5), V8_BENCH_TICK_EVERY (2000
// requests between two proxy_on_tick calls; 0: never), V8_BENCH_VERBOSE=1 (print every filter log),
// V8_BENCH_EVICT_KB / V8_BENCH_EVICT_EACH (cold caches in the per-callback pass, see README),
// BENCH_OUT (the folder of bench/run.sh's keys and requests, target/bench).
//
// The host side is a stub written in JS: header maps, buffers, properties and shared data kept in
// JS objects, serialized into the module's memory the way Envoy's proxy-wasm host does (memory
// obtained from the module's proxy_on_memory_allocate). What is timed is the module's code, the
// Wasm -> host call transitions and that marshalling; Envoy's own work behind each host call (its
// header map, its stats, its shared-data locks) and everything else Envoy does per request are
// not. See bench/v8/README.md.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BENCH = process.env.BENCH_OUT ?? path.join(ROOT, 'target/bench');

// ---------------------------------------------------------------------------------------------
// Arguments

function fail(msg) {
  process.stderr.write(`v8 bench: ${msg}\n`);
  process.exit(1);
}

function resolveInput(p) {
  if (path.isAbsolute(p) || fs.existsSync(p)) return path.resolve(p);
  return path.join(ROOT, p);
}

const wasmPath = resolveInput(process.argv[2] || 'target/wasm32-wasip1/release/filter.wasm');
const mode = process.argv[3] || 'modern';
const N = Number(process.argv[4] || 100000);
const probeConfig = process.argv[5] || 'floor';
const WARMUP = Number(process.env.V8_BENCH_WARMUP ?? 20000);
const REPS = Number(process.env.V8_BENCH_REPS ?? 5);
const TICK_EVERY = Number(process.env.V8_BENCH_TICK_EVERY ?? 2000);
const VERBOSE = process.env.V8_BENCH_VERBOSE === '1';
// KiB of memory swept before each request of the per-callback pass (0: none): in Envoy the
// codec, router and access log run between two requests and push the filter out of the caches.
// V8_BENCH_EVICT_EACH=1 sweeps before every callback instead, as Envoy's work between them does.
const EVICT_KB = Number(process.env.V8_BENCH_EVICT_KB ?? 0);
const EVICT_EACH = process.env.V8_BENCH_EVICT_EACH === '1';
const evictBuffer = new Uint8Array(EVICT_KB * 1024);
let evictSink = 0;
function evictCaches() {
  for (let i = 0; i < evictBuffer.length; i += 64) evictSink += evictBuffer[i]++;
}

if (!['modern', 'legacy', 'probe'].includes(mode)) fail(`unknown mode ${mode} (modern, legacy, probe)`);
if (!(N > 0) || !Number.isInteger(N)) fail(`N must be a positive integer, not ${process.argv[4]}`);

if (!fs.existsSync(wasmPath)) {
  const probeWasm = path.join(ROOT, 'bench/probe/target/wasm32-wasip1/release/probe.wasm');
  if (wasmPath === probeWasm) {
    process.stderr.write('v8 bench: building the probe\n');
    execFileSync('cargo', ['build', '-q', '--release', '--target', 'wasm32-wasip1', '--manifest-path',
      path.join(ROOT, 'bench/probe/Cargo.toml')], { cwd: ROOT, stdio: 'inherit' });
  } else {
    fail(`no ${wasmPath} (make build)`);
  }
}

// ---------------------------------------------------------------------------------------------
// Inputs: the Envoy bench's keys, requests and gateway configuration

function needBenchMaterial() {
  const missing = ['keys/gateway.pem', 'keys/seal.keys', 'keys/hash.key', 'keys/idp-jwks.json',
    'requests/modern.http', 'requests/legacy.http', 'requests/initialize.http']
    .filter((f) => !fs.existsSync(path.join(BENCH, f)));
  if (missing.length) {
    // Not run from here: bench/run.sh starts Envoy and wrk, and clears target/bench first.
    fail(`missing ${path.join(BENCH, missing[0])}; create the bench material once with\n` +
      `  bash -c 'cd ${ROOT} && BENCH_SECONDS=1 BENCH_ROUNDS=1 BENCH_MEMORY_COUNT=0 BENCH_CONFIGS=bare bash bench/run.sh'`);
  }
}

// A .http file: `Name: value` lines, a blank line, the body.
function readHttp(name) {
  const text = fs.readFileSync(path.join(BENCH, 'requests', name), 'utf8');
  const blank = text.indexOf('\n\n');
  const head = blank < 0 ? text : text.slice(0, blank);
  const body = blank < 0 ? '' : text.slice(blank + 2);
  const headers = [];
  for (const line of head.split('\n')) {
    if (!line.trim()) continue;
    const colon = line.indexOf(':');
    headers.push([line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()]);
  }
  return { headers, body: Buffer.from(body, 'utf8') };
}

function jwtExp(token) {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')).exp ?? 0;
  } catch {
    return 0;
  }
}

// The bench token lives an hour: mint a fresh one (not written anywhere) when it is about to expire.
let freshToken = null;
function bearer(original) {
  const token = original.replace(/^Bearer\s+/i, '');
  if (jwtExp(token) > Date.now() / 1000 + 600) return original;
  if (freshToken === null) {
    const tool = path.join(ROOT, 'target/debug/mcp-token');
    if (!fs.existsSync(tool)) {
      process.stderr.write('v8 bench: building mcp-token\n');
      execFileSync('cargo', ['build', '-q', '-p', 'integration', '--bin', 'mcp-token'], { cwd: ROOT, stdio: 'inherit' });
    }
    freshToken = execFileSync(tool, ['--dir', path.join(BENCH, 'keys'), '--sub', 'alice', '--scope', 'files:read',
      '--ttl', '3600'], { encoding: 'utf8' }).trim();
    process.stderr.write('v8 bench: the bench token expires within 10 minutes: minted a fresh one\n');
  }
  return `Bearer ${freshToken}`;
}

// Request headers as Envoy's HTTP/1 codec and connection manager hand them to the filter, as
// byte strings (see `latin1` below). The x-request-id is replaced per request.
function requestHeaders(http, extra = []) {
  const headers = [[':authority', '127.0.0.1'], [':path', '/mcp/files'], [':method', 'POST'], [':scheme', 'http']];
  for (const [k, v] of http.headers) {
    if (k === 'content-length' || k === 'mcp-session-id') continue; // a stale handle from bench/run.sh
    headers.push([k, k === 'authorization' ? bearer(v) : v]);
  }
  headers.push(...extra);
  headers.push(['content-length', String(http.body.length)]);
  headers.push(['x-request-id', crypto.randomUUID()]);
  return headers.map(([k, v]) => [latin1(k), latin1(v)]);
}

let pluginConfig;
let environ = [];
let modern;
let legacy;
let initialize;
if (mode === 'probe') {
  needBenchMaterial(); // only the request
  pluginConfig = Buffer.from(probeConfig, 'utf8');
} else {
  needBenchMaterial();
  const keys = path.join(BENCH, 'keys');
  const jwks = fs.readFileSync(path.join(keys, 'idp-jwks.json'), 'utf8').trim();
  const template = fs.readFileSync(path.join(ROOT, 'bench/gateway.json'), 'utf8');
  pluginConfig = Buffer.from(template.replaceAll('{{JWKS}}', jwks).replaceAll('{{CACHE_ENTRIES}}', '10000')
    .replaceAll('{{AUDIT_SINK}}', 'access_log'), 'utf8');
  environ = [
    ['MCP_GW_SIGNING_KEY', fs.readFileSync(path.join(keys, 'gateway.pem'), 'utf8')],
    ['MCP_GW_SEAL_KEYS', fs.readFileSync(path.join(keys, 'seal.keys'), 'utf8').replaceAll('\n', '')],
    ['MCP_GW_HASH_KEY', fs.readFileSync(path.join(keys, 'hash.key'), 'utf8').replaceAll('\n', '')],
  ];
}
modern = readHttp('modern.http');
legacy = readHttp('legacy.http');
initialize = readHttp('initialize.http');

// ---------------------------------------------------------------------------------------------
// The host: proxy-wasm ABI 0.2.1 and WASI preview 1

const Status = { Ok: 0, NotFound: 1, BadArgument: 2, SerializationFailure: 3, ParseFailure: 4, Empty: 7, CasMismatch: 8 };
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'critical'];

// Bytes the host keeps (header names and values, shared data, properties) are JS "binary"
// strings, one char per byte (latin1): Buffer's latin1 copies in and out of the module's memory
// are the cheapest the host can do (a fresh Uint8Array per value costs far more in V8).
const latin1 = (text) => Buffer.from(text, 'utf8').toString('latin1');
const utf8 = (binary) => Buffer.from(binary, 'latin1').toString('utf8');

let memory = null;
let u8 = new Uint8Array(0);
let dv = new DataView(new ArrayBuffer(0));
let mem = Buffer.alloc(0); // a Buffer over the module's memory

function views() {
  // A grown memory detaches the old ArrayBuffer (its length becomes 0).
  if (u8.byteLength === 0) {
    u8 = new Uint8Array(memory.buffer);
    dv = new DataView(memory.buffer);
    mem = Buffer.from(memory.buffer);
  }
}

function bin(ptr, len) {
  views();
  return len === 0 ? '' : mem.latin1Slice(ptr, ptr + len);
}

function text(ptr, len) {
  views();
  return len === 0 ? '' : mem.utf8Slice(ptr, ptr + len);
}

let allocate = null; // proxy_on_memory_allocate or malloc

function alloc(size) {
  const ptr = allocate(size) >>> 0;
  if (ptr === 0) throw new Error(`proxy_on_memory_allocate(${size}) returned 0`);
  views();
  return ptr;
}

// Envoy's copyToPointerSize: the value copied into memory from the module's allocator; an empty
// value is (null, 0). `write` copies it (a latin1 string or bytes) to the pointer.
function returnValue(length, write, ptrPtr, sizePtr) {
  let ptr = 0;
  if (length > 0) {
    ptr = alloc(length);
    write(ptr);
  }
  views();
  dv.setUint32(ptrPtr, ptr, true);
  dv.setUint32(sizePtr, length, true);
}

function returnBin(value, ptrPtr, sizePtr) {
  returnValue(value.length, (ptr) => mem.latin1Write(value, ptr), ptrPtr, sizePtr);
}

function returnBytes(data, ptrPtr, sizePtr) {
  returnValue(data.length, (ptr) => u8.set(data, ptr), ptrPtr, sizePtr);
}

const u32le = (n) => String.fromCharCode(n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255);

// Header map pairs: u32 count, (u32 key_len, u32 value_len) per pair, then each key and value
// followed by a NUL byte, little-endian.
function serializeMap(pairs) {
  let lens = u32le(pairs.length);
  let data = '';
  for (const [k, v] of pairs) {
    lens += u32le(k.length) + u32le(v.length);
    data += `${k}\0${v}\0`;
  }
  return lens + data;
}

function parseMap(ptr, len) {
  views();
  if (len < 4) return [];
  const n = dv.getUint32(ptr, true);
  const pairs = [];
  let at = ptr + 4 + 8 * n;
  for (let i = 0; i < n; i++) {
    const kl = dv.getUint32(ptr + 4 + 8 * i, true);
    const vl = dv.getUint32(ptr + 8 + 8 * i, true);
    const k = bin(at, kl);
    at += kl + 1;
    const v = bin(at, vl);
    at += vl + 1;
    pairs.push([k, v]);
  }
  return pairs;
}

// A header map: its pairs (never mutated in place: request templates share them) and, until it
// is modified, its serialization (`wire`), in which `id` is written at `idAt` (x-request-id).
function headerMapOf(pairs, wire = null, idAt = -1, id = null) {
  return { pairs, wire, idAt, id };
}

function returnMap(map, ptrPtr, sizePtr) {
  if (map.wire === null) map.wire = serializeMap(map.pairs);
  const size = map.wire.length;
  const ptr = alloc(size);
  mem.latin1Write(map.wire, ptr);
  if (map.id !== null) mem.latin1Write(map.id, ptr + map.idAt);
  dv.setUint32(ptrPtr, ptr, true);
  dv.setUint32(sizePtr, size, true);
}

function modified(map) {
  map.wire = null;
  map.id = null;
}

// Per-context state: header maps by map type, buffers by buffer type.
//   maps: 0 request headers, 1 request trailers, 2 response headers, 3 response trailers
//   buffers: 0 request body, 1 response body, 6 VM configuration, 7 plugin configuration
function newStream() {
  return { maps: [headerMapOf([]), headerMapOf([]), headerMapOf([]), headerMapOf([])], body: null, localResponse: null };
}

const rootStream = newStream();
let stream = rootStream; // the context the current callback runs for
const vmConfiguration = new Uint8Array(0);

function headerMap(type) {
  return stream.maps[type] ?? null;
}

function findHeader(pairs, key) {
  for (let i = 0; i < pairs.length; i++) if (pairs[i][0] === key) return i;
  return -1;
}

function lower(s) {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 65 && c <= 90) return s.toLowerCase();
  }
  return s;
}

function buffer(type) {
  switch (type) {
    case 0: return stream.body;
    case 6: return vmConfiguration;
    case 7: return pluginConfig;
    default: return null;
  }
}

// Shared data: key -> [value, cas], Envoy's semantics (a set with cas != 0 and != the current
// cas fails with CasMismatch; a set of a missing key always succeeds; every set gets a new cas).
const shared = new Map();
let nextCas = 0;
function newCas() {
  nextCas = (nextCas + 1) >>> 0;
  if (nextCas === 0) nextCas = 1;
  return nextCas;
}

const properties = new Map(); // path (segments joined by NUL) -> value
// Envoy serializes integer attributes as int64, little-endian.
properties.set('response\0code', u32le(200) + u32le(0));

const metrics = { byName: new Map(), values: [] };
let tickPeriodMs = 0;
let nextHttpCall = 1;
let localResponses = 0;
const logs = { count: 0, printed: 0, last: [] };
const lastLogs = (indent) => (logs.last.length ? logs.last.map((l) => `${indent}${l}`).join('\n') : `${indent}(none)`);

function onLog(level, message) {
  logs.count++;
  logs.last.push(`[${LOG_LEVELS[level] ?? level}] ${message}`);
  if (logs.last.length > 20) logs.last.shift();
  if (VERBOSE || (level >= 3 && logs.printed < 10)) {
    logs.printed++;
    process.stderr.write(`filter ${LOG_LEVELS[level] ?? level}: ${message}\n`);
  }
}

const env = {
  proxy_log(level, ptr, len) {
    onLog(level, text(ptr, len));
    return Status.Ok;
  },
  proxy_get_log_level(ptr) {
    views();
    dv.setUint32(ptr, 2, true); // info, as the bench's Envoy (-l info)
    return Status.Ok;
  },
  proxy_get_current_time_nanoseconds(ptr) {
    views();
    dv.setBigUint64(ptr, BigInt(Date.now()) * 1000000n, true);
    return Status.Ok;
  },
  proxy_set_tick_period_milliseconds(ms) {
    tickPeriodMs = ms;
    return Status.Ok;
  },
  proxy_get_buffer_status(type, lenPtr, flagsPtr) {
    const buf = buffer(type);
    if (buf === null) return Status.NotFound;
    views();
    dv.setUint32(lenPtr, buf.length, true);
    dv.setUint32(flagsPtr, 0, true);
    return Status.Ok;
  },
  proxy_get_buffer_bytes(type, start, maxSize, ptrPtr, sizePtr) {
    // i32 arguments arrive signed: the SDK asks for max_size usize::MAX, which would be -1.
    start >>>= 0;
    maxSize >>>= 0;
    const buf = buffer(type);
    if (buf === null) return Status.NotFound;
    if (start > buf.length) return Status.BadArgument;
    const end = Math.min(buf.length, start + maxSize);
    returnBytes(start === 0 && end === buf.length ? buf : buf.subarray(start, end), ptrPtr, sizePtr);
    return Status.Ok;
  },
  proxy_set_buffer_bytes(type, start, size, ptr, len) {
    start >>>= 0;
    size >>>= 0;
    if (type !== 0) return Status.BadArgument;
    const old = stream.body ?? new Uint8Array(0);
    views();
    const data = u8.slice(ptr, ptr + len);
    const s = Math.min(start, old.length);
    const e = Math.min(old.length, s + size);
    const next = new Uint8Array(s + data.length + (old.length - e));
    next.set(old.subarray(0, s), 0);
    next.set(data, s);
    next.set(old.subarray(e), s + data.length);
    stream.body = next;
    return Status.Ok;
  },
  proxy_get_header_map_pairs(type, ptrPtr, sizePtr) {
    const map = headerMap(type);
    if (map === null) return Status.BadArgument;
    returnMap(map, ptrPtr, sizePtr);
    return Status.Ok;
  },
  proxy_set_header_map_pairs(type, ptr, len) {
    if (headerMap(type) === null) return Status.BadArgument;
    stream.maps[type] = headerMapOf(parseMap(ptr, len).map(([k, v]) => [lower(k), v]));
    return Status.Ok;
  },
  proxy_get_header_map_size(type, sizePtr) {
    const map = headerMap(type);
    if (map === null) return Status.BadArgument;
    if (map.wire === null) map.wire = serializeMap(map.pairs);
    views();
    dv.setUint32(sizePtr, map.wire.length, true);
    return Status.Ok;
  },
  proxy_get_header_map_value(type, kp, kl, ptrPtr, sizePtr) {
    const map = headerMap(type);
    if (map === null) return Status.BadArgument;
    const i = findHeader(map.pairs, lower(bin(kp, kl)));
    if (i < 0) return Status.NotFound;
    returnBin(map.pairs[i][1], ptrPtr, sizePtr);
    return Status.Ok;
  },
  proxy_add_header_map_value(type, kp, kl, vp, vl) {
    const map = headerMap(type);
    if (map === null) return Status.BadArgument;
    map.pairs.push([lower(bin(kp, kl)), bin(vp, vl)]);
    modified(map);
    return Status.Ok;
  },
  // Envoy's setCopy: the first entry of that name takes the value, the others go; else appended.
  proxy_replace_header_map_value(type, kp, kl, vp, vl) {
    const map = headerMap(type);
    if (map === null) return Status.BadArgument;
    const key = lower(bin(kp, kl));
    const value = bin(vp, vl);
    const pairs = map.pairs;
    const i = findHeader(pairs, key);
    if (i < 0) {
      pairs.push([key, value]);
    } else {
      pairs[i] = [key, value];
      for (let j = pairs.length - 1; j > i; j--) if (pairs[j][0] === key) pairs.splice(j, 1);
    }
    modified(map);
    return Status.Ok;
  },
  proxy_remove_header_map_value(type, kp, kl) {
    const map = headerMap(type);
    if (map === null) return Status.BadArgument;
    const key = lower(bin(kp, kl));
    const pairs = map.pairs;
    let removed = false;
    for (let j = pairs.length - 1; j >= 0; j--) {
      if (pairs[j][0] === key) {
        pairs.splice(j, 1);
        removed = true;
      }
    }
    if (removed) modified(map);
    return Status.Ok;
  },
  proxy_get_property(pp, pl, ptrPtr, sizePtr) {
    const value = properties.get(bin(pp, pl));
    if (value === undefined) return Status.NotFound;
    returnBin(value, ptrPtr, sizePtr);
    return Status.Ok;
  },
  proxy_set_property(pp, pl, vp, vl) {
    properties.set(bin(pp, pl), bin(vp, vl));
    return Status.Ok;
  },
  proxy_get_shared_data(kp, kl, ptrPtr, sizePtr, casPtr) {
    const entry = shared.get(bin(kp, kl));
    if (entry === undefined) return Status.NotFound;
    returnBin(entry[0], ptrPtr, sizePtr);
    dv.setUint32(casPtr, entry[1], true);
    return Status.Ok;
  },
  proxy_set_shared_data(kp, kl, vp, vl, cas) {
    const key = bin(kp, kl);
    const entry = shared.get(key);
    if (entry !== undefined && cas !== 0 && (cas >>> 0) !== entry[1]) return Status.CasMismatch;
    shared.set(key, [bin(vp, vl), newCas()]);
    return Status.Ok;
  },
  proxy_register_shared_queue(np, nl, idPtr) {
    views();
    dv.setUint32(idPtr, 1, true);
    return Status.Ok;
  },
  proxy_resolve_shared_queue() {
    return Status.NotFound;
  },
  proxy_enqueue_shared_queue() {
    return Status.Ok;
  },
  proxy_dequeue_shared_queue() {
    return Status.Empty;
  },
  proxy_send_local_response(code, dp, dl, bp, bl, hp, hl, grpc) {
    localResponses++;
    stream.localResponse = { code, details: text(dp, dl), body: text(bp, bl), headers: parseMap(hp, hl), grpc };
    return Status.Ok;
  },
  proxy_http_call(up, ul, hp, hl, bp, bl, tp, tl, timeout, tokenPtr) {
    // Never answered: no cluster behind this host.
    views();
    dv.setUint32(tokenPtr, nextHttpCall++, true);
    return Status.Ok;
  },
  proxy_define_metric(type, np, nl, idPtr) {
    const name = text(np, nl);
    let id = metrics.byName.get(name);
    if (id === undefined) {
      id = metrics.values.length + 1;
      metrics.byName.set(name, id);
      metrics.values.push(0n);
    }
    views();
    dv.setUint32(idPtr, id, true);
    return Status.Ok;
  },
  proxy_increment_metric(id, offset) {
    if (id < 1 || id > metrics.values.length) return Status.NotFound;
    metrics.values[id - 1] += BigInt(offset);
    return Status.Ok;
  },
  proxy_record_metric(id, value) {
    if (id < 1 || id > metrics.values.length) return Status.NotFound;
    metrics.values[id - 1] = BigInt(value);
    return Status.Ok;
  },
  proxy_get_metric(id, ptr) {
    if (id < 1 || id > metrics.values.length) return Status.NotFound;
    views();
    dv.setBigUint64(ptr, BigInt.asUintN(64, metrics.values[id - 1]), true);
    return Status.Ok;
  },
  proxy_continue_stream() {
    return Status.Ok;
  },
  proxy_close_stream() {
    return Status.Ok;
  },
  proxy_set_effective_context(ctx) {
    const s = streams.get(ctx);
    if (s === undefined && ctx !== ROOT_ID) return Status.BadArgument;
    stream = s ?? rootStream;
    return Status.Ok;
  },
  proxy_done() {
    return Status.Ok;
  },
  proxy_call_foreign_function() {
    return Status.NotFound;
  },
};

class ProcExit extends Error {}

const wasi = {
  environ_sizes_get(countPtr, sizePtr) {
    views();
    dv.setUint32(countPtr, environ.length, true);
    dv.setUint32(sizePtr, environ.reduce((n, [k, v]) => n + Buffer.byteLength(`${k}=${v}`) + 1, 0), true);
    return 0;
  },
  environ_get(arrayPtr, bufPtr) {
    views();
    let at = bufPtr;
    environ.forEach(([k, v], i) => {
      dv.setUint32(arrayPtr + 4 * i, at, true);
      const b = Buffer.from(`${k}=${v}\0`, 'utf8');
      u8.set(b, at);
      at += b.length;
    });
    return 0;
  },
  random_get(ptr, len) {
    views();
    for (let off = 0; off < len; off += 65536) {
      crypto.getRandomValues(u8.subarray(ptr + off, ptr + Math.min(len, off + 65536)));
    }
    return 0;
  },
  clock_time_get(id, precision, timePtr) {
    views();
    const t = id === 0 ? BigInt(Date.now()) * 1000000n : process.hrtime.bigint();
    dv.setBigUint64(timePtr, t, true);
    return 0;
  },
  clock_res_get(id, resPtr) {
    views();
    dv.setBigUint64(resPtr, 1000n, true);
    return 0;
  },
  fd_write(fd, iovs, iovsLen, nwrittenPtr) {
    views();
    let n = 0;
    const parts = [];
    for (let i = 0; i < iovsLen; i++) {
      const p = dv.getUint32(iovs + 8 * i, true);
      const l = dv.getUint32(iovs + 8 * i + 4, true);
      parts.push(Buffer.from(u8.subarray(p, p + l)));
      n += l;
    }
    if (fd === 1 || fd === 2) process.stderr.write(Buffer.concat(parts));
    dv.setUint32(nwrittenPtr, n, true);
    return 0;
  },
  proc_exit(code) {
    throw new ProcExit(`the module called proc_exit(${code})`);
  },
};

// Host calls by import name: counted only while `counts` is set (one request); the time spent in
// them (the JS stub, marshalling included) summed only while `hostTiming` is set (its own pass).
let counts = null;
let hostTiming = false;
let hostNs = 0n;
const stubbed = new Set();

function wrap(name, impl) {
  return function (a, b, c, d, e, f, g, h, i, j) {
    if (counts !== null) counts[name] = (counts[name] || 0) + 1;
    if (hostTiming) {
      const t0 = process.hrtime.bigint();
      const r = impl(a, b, c, d, e, f, g, h, i, j);
      hostNs += process.hrtime.bigint() - t0;
      return r;
    }
    return impl(a, b, c, d, e, f, g, h, i, j);
  };
}

function stub(module, name) {
  return wrap(name, () => {
    if (!stubbed.has(name)) {
      stubbed.add(name);
      process.stderr.write(`v8 bench: stub ${module}.${name} called (returns 0)\n`);
    }
    return 0;
  });
}

// ---------------------------------------------------------------------------------------------
// Instantiation and the root context

const ROOT_ID = 1;
const streams = new Map(); // context id -> stream

const module = new WebAssembly.Module(fs.readFileSync(wasmPath));
const imports = {};
for (const imp of WebAssembly.Module.imports(module)) {
  imports[imp.module] ??= {};
  if (imp.kind !== 'function') fail(`the module imports a ${imp.kind} ${imp.module}.${imp.name}: not supported`);
  const impl = imp.module === 'env' ? env[imp.name] : imp.module === 'wasi_snapshot_preview1' ? wasi[imp.name] : undefined;
  imports[imp.module][imp.name] = impl ? wrap(imp.name, impl) : stub(imp.module, imp.name);
}
const instance = await WebAssembly.instantiate(module, imports);
const E = instance.exports;
memory = E.memory;
views();
allocate = E.proxy_on_memory_allocate ?? E.malloc;
if (!allocate) fail('the module exports neither proxy_on_memory_allocate nor malloc');
const abi = WebAssembly.Module.exports(module).map((e) => e.name).find((n) => n.startsWith('proxy_abi_version_'));
if (abi !== 'proxy_abi_version_0_2_1') process.stderr.write(`v8 bench: warning: the module exports ${abi ?? 'no proxy_abi_version_*'}\n`);

// As Envoy does, a callback the module does not export is skipped with its default answer
// (continue; done): make build leaves only the callbacks a filter implements exported.
const callback = (name, otherwise) => E[name] ?? (() => otherwise);
const CB = {
  vmStart: callback('proxy_on_vm_start', 1),
  requestHeaders: callback('proxy_on_request_headers', 0),
  requestBody: callback('proxy_on_request_body', 0),
  responseHeaders: callback('proxy_on_response_headers', 0),
  log: callback('proxy_on_log', undefined),
  done: callback('proxy_on_done', 1),
};

function callRoot(fn, ...args) {
  stream = rootStream;
  return fn(...args);
}

try {
  if (E._initialize) E._initialize();
  else if (E._start) E._start();
  callRoot(E.proxy_on_context_create, ROOT_ID, 0);
  if (!callRoot(CB.vmStart, ROOT_ID, vmConfiguration.length)) fail('proxy_on_vm_start returned false');
  if (!callRoot(E.proxy_on_configure, ROOT_ID, pluginConfig.length)) {
    fail(`proxy_on_configure returned false; the filter's last log lines:\n${lastLogs('  ')}`);
  }
} catch (e) {
  fail(`setup failed: ${e.stack ?? e}\nlast log lines:\n${lastLogs('  ')}`);
}

// ---------------------------------------------------------------------------------------------
// One request through the filter

let nextCtx = ROOT_ID + 1;
let anomalies = 0; // measured requests whose callbacks returned something unexpected
let sinceTick = 0;

// Envoy gives every request a new x-request-id: taken from a pool made before timing.
const UUIDS = Array.from({ length: 1 << 16 }, () => crypto.randomUUID());
let uuidNext = 0;

// A request template: its header pairs (never mutated), their serialization and where the
// x-request-id value sits in it, the body.
function makeRequest(http, extra = []) {
  const pairs = requestHeaders(http, extra);
  const idIdx = findHeader(pairs, 'x-request-id');
  let idAt = 4 + 8 * pairs.length;
  for (let i = 0; i < idIdx; i++) idAt += pairs[i][0].length + pairs[i][1].length + 2;
  idAt += pairs[idIdx][0].length + 1;
  return { pairs, wire: serializeMap(pairs), idIdx, idAt, body: new Uint8Array(http.body) };
}

function makeResponse(pairs) {
  pairs = pairs.map(([k, v]) => [latin1(k), latin1(v)]);
  return { pairs, wire: serializeMap(pairs) };
}

const RESPONSE = makeResponse([[':status', '200'], ['content-type', 'application/json']]);

function openStream(ctx, request, response) {
  const s = newStream();
  const id = UUIDS[uuidNext++ & 0xffff];
  const headers = request.pairs.slice();
  headers[request.idIdx] = ['x-request-id', id];
  s.maps[0] = headerMapOf(headers, request.wire, request.idAt, id);
  s.maps[2] = headerMapOf(response.pairs.slice(), response.wire);
  s.body = request.body;
  streams.set(ctx, s);
  return s;
}

function closeStream(ctx, s, h, b, r) {
  streams.delete(ctx);
  if (h !== 1 || b !== 0 || r !== 0 || s.localResponse !== null) anomalies++;
}

// Envoy calls proxy_on_tick on a timer (the filter asks for 200 ms): here every TICK_EVERY
// requests, so that runs are deterministic (2000 requests: about 200 ms of a worker at 10k req/s).
function maybeTick() {
  if (E.proxy_on_tick && TICK_EVERY > 0 && ++sinceTick >= TICK_EVERY) {
    sinceTick = 0;
    stream = rootStream;
    E.proxy_on_tick(ROOT_ID);
    return true;
  }
  return false;
}

function runRequest(request, response) {
  const ctx = nextCtx++;
  const s = openStream(ctx, request, response);
  stream = rootStream;
  E.proxy_on_context_create(ctx, ROOT_ID);
  stream = s;
  const h = CB.requestHeaders(ctx, s.maps[0].pairs.length, 0);
  stream = s;
  const b = CB.requestBody(ctx, request.body.length, 1);
  stream = s;
  const r = CB.responseHeaders(ctx, s.maps[2].pairs.length, 0);
  stream = s;
  CB.log(ctx);
  stream = s;
  if (CB.done(ctx)) {
    stream = s;
    E.proxy_on_delete(ctx);
  }
  closeStream(ctx, s, h, b, r);
  maybeTick();
  return { h, b, r, stream: s };
}

// The same with hrtime around each export call (a separate pass: the timer calls cost too).
const CALLBACKS = ['context_create', 'request_headers', 'request_body', 'response_headers', 'log', 'done_delete', 'tick'];
const spent = Object.fromEntries(CALLBACKS.map((c) => [c, 0n]));
const now = process.hrtime.bigint;

function runRequestTimed(request, response) {
  if (EVICT_KB > 0 && !EVICT_EACH) evictCaches();
  const ctx = nextCtx++;
  const s = openStream(ctx, request, response);
  // One callback, timed into spent[name], with the stream it runs on.
  const timed = (name, on, call) => {
    if (EVICT_EACH && EVICT_KB > 0) evictCaches();
    stream = on;
    const t0 = now();
    const result = call();
    spent[name] += now() - t0;
    return result;
  };
  timed('context_create', rootStream, () => E.proxy_on_context_create(ctx, ROOT_ID));
  const h = timed('request_headers', s, () => CB.requestHeaders(ctx, s.maps[0].pairs.length, 0));
  const b = timed('request_body', s, () => CB.requestBody(ctx, request.body.length, 1));
  const r = timed('response_headers', s, () => CB.responseHeaders(ctx, s.maps[2].pairs.length, 0));
  timed('log', s, () => CB.log(ctx));
  timed('done_delete', s, () => {
    if (CB.done(ctx)) {
      stream = s;
      E.proxy_on_delete(ctx);
    }
  });
  closeStream(ctx, s, h, b, r);
  const t0 = now();
  if (maybeTick()) spent.tick += now() - t0;
}

// A header's value, as text.
function header(map, name) {
  const i = findHeader(map.pairs, name);
  return i < 0 ? null : utf8(map.pairs[i][1]);
}

function checkLocalResponse(what, s) {
  if (s.localResponse !== null) {
    const lr = s.localResponse;
    process.stderr.write(`v8 bench: ${what}: the filter sent a local response ${lr.code} (a setup mistake)\n` +
      `  headers: ${JSON.stringify(lr.headers)}\n  body: ${lr.body}\n` +
      `  last log lines:\n${lastLogs('    ')}\n`);
    process.exit(1);
  }
}

// ---------------------------------------------------------------------------------------------
// Setup per mode, and the correctness check before anything is timed

let request;
let response = RESPONSE;
let sessionHandle = null;
let firstCounts = {}; // host calls of the first request of the measured kind

function runChecked(what, req, resp) {
  let out;
  try {
    counts = {};
    out = runRequest(req, resp);
    out.counts = counts;
    counts = null;
  } catch (e) {
    fail(`${what}: the module trapped: ${e.stack ?? e}\nlast log lines:\n${lastLogs('  ')}`);
  }
  checkLocalResponse(what, out.stream);
  const expected = [out.h === 1, out.b === 0, out.r === 0];
  if (expected.includes(false)) {
    fail(`${what}: callbacks returned headers=${out.h} (1 expected) body=${out.b} (0) response=${out.r} (0)`);
  }
  return out;
}

function checkForwarded(what, req, out) {
  const before = utf8(req.pairs[findHeader(req.pairs, 'authorization')][1]);
  const after = header(out.stream.maps[0], 'authorization');
  if (!after || !after.startsWith('Bearer ') || after === before) {
    fail(`${what}: the filter did not replace the caller's token (authorization: ${after})`);
  }
}

if (mode === 'probe') {
  request = makeRequest(modern);
  const out = runChecked('probe request', request, response);
  firstCounts = out.counts;
  // With the gateway's header edits (in `hostcalls`) it sets those two instead of its four.
  const gatewaySets = probeConfig === 'hostcalls' || probeConfig.split(',').includes('gateway_sets');
  const names = gatewaySets ? ['authorization', 'x-mcp-affinity'] : ['mcp-method', 'mcp-name', 'x-probe-era', 'x-probe-id'];
  const set = names.map((n) => [n, header(out.stream.maps[0], n)]);
  if (set.some(([, v]) => v === null)) fail(`the probe did not set its headers: ${JSON.stringify(set)}`);
  console.log(`check: probe set ${set.map(([k, v]) => `${k}: ${v}`).join(', ')}`);
} else if (mode === 'modern') {
  request = makeRequest(modern);
  const out = runChecked('modern request', request, response);
  firstCounts = out.counts;
  checkForwarded('modern request', request, out);
  const affinity = header(out.stream.maps[0], 'x-mcp-affinity');
  if (!affinity) fail('modern request: the filter set no x-mcp-affinity');
  console.log(`check: authorization replaced (${header(out.stream.maps[0], 'authorization').length} chars), x-mcp-affinity: ${affinity}`);
} else {
  const init = makeRequest(initialize);
  const out = runChecked('legacy initialize', init,
    makeResponse([[':status', '200'], ['content-type', 'application/json'], ['mcp-session-id', 'upstream-1234']]));
  sessionHandle = header(out.stream.maps[2], 'mcp-session-id');
  if (!sessionHandle || sessionHandle === 'upstream-1234') {
    fail(`legacy initialize: the filter did not seal the session id (response mcp-session-id: ${sessionHandle})`);
  }
  request = makeRequest(legacy, [['mcp-session-id', sessionHandle]]);
  const first = runChecked('legacy request', request, response);
  firstCounts = first.counts;
  checkForwarded('legacy request', request, first);
  console.log(`check: sealed session handle (${sessionHandle.length} chars), authorization replaced` +
    `${header(first.stream.maps[0], 'x-mcp-affinity') ? `, x-mcp-affinity: ${header(first.stream.maps[0], 'x-mcp-affinity')}` : ''}`);
}

// Host calls during one request (after the warm-up: the steady state).
function sortedCounts(c) {
  return Object.fromEntries(Object.entries(c).sort(([a], [b]) => a.localeCompare(b)));
}

function countOne() {
  counts = {};
  runRequest(request, response);
  const c = counts;
  counts = null;
  return sortedCounts(c);
}

// ---------------------------------------------------------------------------------------------
// Timing

function perRequestUs(ns, n) {
  return Number(ns) / 1000 / n;
}

function round(x, digits = 3) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

const coldCounts = sortedCounts(firstCounts);
anomalies = 0;
localResponses = 0;
const reps = [];
let hostPass = 0n;
try {
  for (let i = 0; i < WARMUP; i++) runRequest(request, response);
  for (let r = 0; r < REPS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) runRequest(request, response);
    reps.push(perRequestUs(process.hrtime.bigint() - t0, N));
  }
  for (let i = 0; i < N; i++) runRequestTimed(request, response);
  hostTiming = true;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) runRequest(request, response);
  hostPass = process.hrtime.bigint() - t0;
  hostTiming = false;
} catch (e) {
  fail(`a request trapped: ${e.stack ?? e}\nlast log lines:\n${lastLogs('  ')}`);
}
const hostcalls = countOne();
if (anomalies > 0 || localResponses > 0) {
  fail(`${anomalies} measured requests returned unexpected actions or a local response (${localResponses} local responses)`);
}

const sorted = [...reps].sort((a, b) => a - b);
const median = sorted[Math.floor(sorted.length / 2)];
const perCallback = Object.fromEntries(CALLBACKS.map((c) => [c, round(perRequestUs(spent[c], N))]));
const callbackSum = Object.values(perCallback).reduce((a, b) => a + b, 0);
const hostUs = round(perRequestUs(hostNs, N));
const hostcallTotal = Object.values(hostcalls).reduce((a, b) => a + b, 0);

const label = mode === 'probe' ? `probe (${probeConfig})` : mode;
console.log(`module: ${wasmPath.startsWith(ROOT + path.sep) ? path.relative(ROOT, wasmPath) : wasmPath} (${fs.statSync(wasmPath).size} bytes), ${label}, node ${process.version} (V8 ${process.versions.v8})`);
console.log(`requests: ${WARMUP} warm-up, ${REPS} x ${N} timed, proxy_on_tick every ${TICK_EVERY || 'never'} requests`);
console.log(`us/request: median ${median.toFixed(3)}, min ${sorted[0].toFixed(3)} (repetitions: ${reps.map((x) => x.toFixed(3)).join(' ')})`);
console.log(`per callback, us/request (separate pass of ${N} with a timer around each export call; sum ${callbackSum.toFixed(3)}):`);
for (const c of CALLBACKS) console.log(`  ${c.padEnd(17)} ${perCallback[c].toFixed(3)}`);
console.log(`in the JS host functions (another pass of ${N}, a timer around each host call, which adds to it): ` +
  `${hostUs.toFixed(3)} us/request of ${perRequestUs(hostPass, N).toFixed(3)}`);
console.log(`host calls per request (steady state; ${hostcallTotal} in all):`);
for (const [k, v] of Object.entries(hostcalls)) console.log(`  ${k.padEnd(36)} ${v}${coldCounts[k] !== v ? `   (first request: ${coldCounts[k] ?? 0})` : ''}`);
for (const k of Object.keys(coldCounts)) if (!(k in hostcalls)) console.log(`  ${k.padEnd(36)} 0   (first request: ${coldCounts[k]})`);
console.log(`filter log lines: ${logs.count}; shared data keys: ${shared.size}; metrics defined: ${metrics.byName.size}; memory: ${(memory.buffer.byteLength / 1048576).toFixed(1)} MiB`);
console.log(JSON.stringify({
  mode: label,
  module: path.basename(wasmPath),
  n: N,
  reps: REPS,
  us_per_request_median: round(median),
  us_min: round(sorted[0]),
  us_reps: reps.map((x) => round(x)),
  per_callback_us: perCallback,
  host_functions_us: hostUs,
  hostcalls_per_request: hostcalls,
}));
