#!/usr/bin/env node
// Runs a proxy-wasm (ABI 0.2.1) HTTP filter outside Envoy with a mock host, drives it through
// simulated scatter-gather requests and reports µs/request and per-request crossing counts.
// `make profile-wasm` runs it under V8's profiler (Node's V8, close to Envoy's) on a build that
// keeps function names, then summarize.js says where the time inside the VM goes. It checks
// one answer first (valid JSON holding a..d), so `make test` also runs it briefly as a smoke
// test of the .wasm outside Envoy.
//
//   node harness.js <wasm> [iterations=200000] [--warmup=N] [--full] [--meta=FILE]
//
//   --full     also call what Envoy would additionally call for a local reply and stream end:
//              proxy_on_response_headers, proxy_on_response_body, proxy_on_log (if exported).
//   --meta     write a JSON file with the timed window (hrtime, µs) and counts, for summarize.js.
//              Default with --cpu-prof: <cpu-prof-dir>/run-meta.json.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

// ---------------------------------------------------------------- arguments
const argv = process.argv.slice(2);
const opts = { full: false, warmup: 20000, meta: null, verbose: false };
const pos = [];
for (const a of argv) {
  if (a === '--full') opts.full = true;
  else if (a === '--verbose' || a === '-v') opts.verbose = true;
  else if (a.startsWith('--warmup=')) opts.warmup = Number(a.slice(9));
  else if (a.startsWith('--meta=')) opts.meta = a.slice(7);
  else pos.push(a);
}
if (pos.length < 1) {
  console.error('usage: node harness.js <wasm> [iterations] [--warmup=N] [--full] [--meta=FILE]');
  process.exit(2);
}
const WASM = pos[0];
const N = pos[1] ? Number(pos[1]) : 200000;
if (!opts.meta) {
  const i = process.execArgv.findIndex((a) => a.startsWith('--cpu-prof-dir'));
  if (i >= 0) {
    const a = process.execArgv[i];
    const dir = a.includes('=') ? a.slice(a.indexOf('=') + 1) : process.execArgv[i + 1];
    opts.meta = path.join(dir, 'run-meta.json');
  }
}

// ---------------------------------------------------------------- fixed inputs
const PLUGIN_CONFIG = Buffer.from(
  '{"routes":[{"name":"agg","match":{"path":"/agg"},"calls":[{"name":"a","cluster":"a","path":"/0ms"},{"name":"b","cluster":"b","path":"/0ms"},{"name":"c","cluster":"c","path":"/0ms"},{"name":"d","cluster":"d","path":"/0ms"}]}]}'
);
const VM_CONFIG = Buffer.alloc(0);

const UPSTREAM_BODIES = [
  {
    service: 'a', id: '42', sku: 'TRS-042-BLU', name: 'Trailblazer running shoe', brand: 'Northpeak',
    category: 'footwear/running',
    description: 'Lightweight trail shoe with a grippy outsole and a breathable mesh upper.',
    images: ['https://img.example.com/p/42/main.jpg'], attributes: { color: 'blue', weight_g: 265 },
  },
  {
    service: 'b', product_id: '42', currency: 'EUR', list_price: 129.9, sale_price: 99.9,
    discount_pct: 23, valid_from: '2026-11-20T00:00:00Z', valid_until: '2026-11-30T23:59:59Z',
    tax: { included: true, rate: 0.19 }, promotions: [{ code: 'BLACKFRIDAY', label: 'Black Friday -23%' }],
  },
  {
    service: 'c', product_id: '42', warehouses: [
      { id: 'fra-1', city: 'Frankfurt', available: 18, reserved: 2 },
      { id: 'ams-2', city: 'Amsterdam', available: 5, reserved: 0 },
      { id: 'mad-1', city: 'Madrid', available: 0, reserved: 0 },
    ], restock_eta: '2026-12-03', backorder: false,
  },
  {
    service: 'd', product_id: '42', rating: 4.6, count: 1287, histogram: [12, 25, 61, 298, 891],
    top_review: { author: 'm.keller', stars: 5, title: 'Great grip on wet rock',
      text: 'Used them for 300 km, the outsole still holds up and they dry quickly.' },
  },
].map((o) => Buffer.from(JSON.stringify(o)));

// ---------------------------------------------------------------- header-map (de)serialization
function serializePairs(pairs) {
  let size = 4;
  const enc = pairs.map(([k, v]) => [Buffer.from(k), Buffer.from(v)]);
  for (const [k, v] of enc) size += 8 + k.length + 1 + v.length + 1;
  const out = Buffer.alloc(size);
  out.writeUInt32LE(enc.length, 0);
  let o = 4;
  for (const [k, v] of enc) { out.writeUInt32LE(k.length, o); out.writeUInt32LE(v.length, o + 4); o += 8; }
  for (const [k, v] of enc) { k.copy(out, o); o += k.length + 1; v.copy(out, o); o += v.length + 1; }
  return out;
}
function parsePairs(buf) {
  if (buf.length === 0) return [];
  const n = buf.readUInt32LE(0);
  const lens = [];
  let o = 4;
  for (let i = 0; i < n; i++) { lens.push([buf.readUInt32LE(o), buf.readUInt32LE(o + 4)]); o += 8; }
  const out = [];
  for (const [kl, vl] of lens) {
    const k = buf.toString('utf8', o, o + kl); o += kl + 1;
    const v = buf.toString('utf8', o, o + vl); o += vl + 1;
    out.push([k, v]);
  }
  return out;
}
// A header map as the host holds it: ordered pairs, a lookup by name, and its serialization.
function makeMap(pairs) {
  const byName = new Map();
  for (const [k, v] of pairs) if (!byName.has(k)) byName.set(k, Buffer.from(v));
  return { pairs, byName, bytes: serializePairs(pairs) };
}
const EMPTY_MAP = makeMap([]);

// Request header maps: a pool with distinct x-request-id values, built before timing.
const REQ_POOL = [];
for (let i = 0; i < 256; i++) {
  REQ_POOL.push(makeMap([
    [':method', 'GET'], [':path', '/agg'], [':authority', '127.0.0.1:18001'], [':scheme', 'http'],
    ['user-agent', 'wrk'], ['x-forwarded-proto', 'http'], ['x-request-id', crypto.randomUUID()],
  ]));
}
const CALL_RESP_MAPS = UPSTREAM_BODIES.map((b) => makeMap([
  [':status', '200'], ['content-type', 'application/json'], ['content-length', String(b.length)],
  ['date', 'Sun, 22 Nov 2026 16:37:40 GMT'], ['server', 'envoy'],
]));

// ---------------------------------------------------------------- host state
const HOSTCALL_NAMES = [];            // import index -> name
const VM_NAMES = [];                  // export index -> name
const VMC = new Float64Array(256);    // calls into the VM by export index
let allocBytes = 0;
let quiet = false;                     // suppress logs (timed loop and warm-up)
const logs = [];                       // log lines kept when not quiet
let logCount = 0;

const state = {
  maps: [null, null, null, null, null, null, null, null],     // by MapType
  buffers: [null, null, null, null, null, null, VM_CONFIG, PLUGIN_CONFIG], // by BufferType
  nextToken: 1,
  calls: [],            // http calls dispatched during the current request
  localResponse: null,  // last proxy_send_local_response
  localResponses: 0,
  tickPeriod: 0,
  effective: 0,
  metrics: new Map(),   // id -> {name,type,value}
  metricIds: new Map(), // name -> id
  shared: new Map(),    // key -> {value: Buffer, cas}
  propsAsked: new Map(),// property path -> count (during verification)
  properties: new Map([
    // a few that filters commonly read; anything else is NotFound
    ['plugin_name', Buffer.from('gateway-aggregator')],
    ['plugin_root_id', Buffer.from('')],
    ['plugin_vm_id', Buffer.from('')],
  ]),
  stdout: [],
};

let mem = null, u8 = null, dv = null, ex = null;
// memory.grow detaches the old ArrayBuffer (length becomes 0): only then re-read mem.buffer.
function views() {
  if (u8 === null || u8.length === 0) {
    u8 = new Uint8Array(mem.buffer);
    dv = new DataView(mem.buffer);
  }
}
const decoder = new TextDecoder('utf-8');
function str(ptr, len) {
  views();
  if (len <= 32) { // short keys (header names): plain ASCII fast path
    let r = '';
    for (let i = ptr; i < ptr + len; i++) {
      const c = u8[i];
      if (c >= 0x80) return decoder.decode(u8.subarray(ptr, ptr + len));
      r += String.fromCharCode(c);
    }
    return r;
  }
  return decoder.decode(u8.subarray(ptr, ptr + len));
}
// Copy out of wasm memory. Buffer.allocUnsafe uses Node's pool: much cheaper than slice() or
// new Uint8Array(), which allocate a fresh off-heap backing store per call.
function bytes(ptr, len) { views(); const b = Buffer.allocUnsafe(len); b.set(u8.subarray(ptr, ptr + len)); return b; }

let allocFn = null;
let allocIdx = -1;
function vmAlloc(size) {
  VMC[allocIdx]++;
  allocBytes += size;
  const p = allocFn(size) >>> 0;
  if (p === 0) throw new Error(`${allocName}(${size}) returned 0`);
  return p;
}
let allocName = 'proxy_on_memory_allocate';

// Envoy's copyToPointerSize: nothing is allocated for empty data (pointer 0, size 0).
function copyOut(src, start, end, ptrPtr, sizePtr) {
  const len = end - start;
  let p = 0;
  if (len > 0) {
    p = vmAlloc(len);
    views();
    u8.set(src.subarray(start, end), p);
  } else views();
  dv.setUint32(ptrPtr, p, true);
  dv.setUint32(sizePtr, len, true);
}

const OK = 0, NOT_FOUND = 1, BAD_ARGUMENT = 2, UNIMPLEMENTED = 12;

const env = {
  proxy_log(level, ptr, len) {
    logCount++;
    if (!quiet) logs.push(`[wasm log ${level}] ${str(ptr, len)}`);
    return OK;
  },
  proxy_get_log_level(ptr) { views(); dv.setUint32(ptr, 2, true); return OK; },
  proxy_get_current_time_nanoseconds(ptr) {
    // epoch base (BigInt, split once) + monotonic offset in ns as a Number (exact below 2^53 ns)
    let lo = EPOCH_LO + Math.round((performance.now() - PERF_BASE_MS) * 1e6);
    let hi = EPOCH_HI;
    if (lo >= 4294967296) { hi += Math.floor(lo / 4294967296); lo %= 4294967296; }
    views();
    dv.setUint32(ptr, lo, true);
    dv.setUint32(ptr + 4, hi, true);
    return OK;
  },
  proxy_set_tick_period_milliseconds(ms) { state.tickPeriod = ms; return OK; },
  proxy_set_effective_context(id) { state.effective = id; return OK; },
  proxy_done() { return OK; },

  proxy_get_buffer_bytes(type, start, max, ptrPtr, sizePtr) {
    const b = state.buffers[type];
    if (b === null || b === undefined) return NOT_FOUND;
    start >>>= 0; max >>>= 0; // usize::MAX arrives as -1
    if (start > b.length) return BAD_ARGUMENT;
    const end = Math.min(b.length, start + max);
    copyOut(b, start, end, ptrPtr, sizePtr);
    return OK;
  },
  proxy_set_buffer_bytes(type, start, len, ptr, size) {
    const b = state.buffers[type];
    if (b === null || b === undefined) return NOT_FOUND;
    const data = bytes(ptr, size);
    state.buffers[type] = Buffer.concat([b.subarray(0, start), data, b.subarray(Math.min(b.length, start + len))]);
    return OK;
  },

  proxy_get_header_map_pairs(type, ptrPtr, sizePtr) {
    const m = state.maps[type];
    if (m === null || m === undefined) return NOT_FOUND;
    if (m.pairs.length === 0) { views(); dv.setUint32(ptrPtr, 0, true); dv.setUint32(sizePtr, 0, true); return OK; }
    copyOut(m.bytes, 0, m.bytes.length, ptrPtr, sizePtr);
    return OK;
  },
  proxy_get_header_map_value(type, kPtr, kLen, ptrPtr, sizePtr) {
    const m = state.maps[type];
    if (m === null || m === undefined) return NOT_FOUND;
    const v = m.byName.get(str(kPtr, kLen));
    if (v === undefined) return NOT_FOUND;
    copyOut(v, 0, v.length, ptrPtr, sizePtr);
    return OK;
  },
  proxy_set_header_map_pairs(type, ptr, size) {
    if (!state.maps[type]) return NOT_FOUND;
    state.maps[type] = makeMap(parsePairs(bytes(ptr, size)));
    return OK;
  },
  proxy_add_header_map_value(type, kPtr, kLen, vPtr, vLen) {
    const m = state.maps[type];
    if (!m) return NOT_FOUND;
    state.maps[type] = makeMap([...m.pairs, [str(kPtr, kLen), str(vPtr, vLen)]]);
    return OK;
  },
  proxy_replace_header_map_value(type, kPtr, kLen, vPtr, vLen) {
    const m = state.maps[type];
    if (!m) return NOT_FOUND;
    const k = str(kPtr, kLen), v = str(vPtr, vLen);
    const pairs = m.pairs.filter(([n]) => n !== k);
    pairs.push([k, v]);
    state.maps[type] = makeMap(pairs);
    return OK;
  },
  proxy_remove_header_map_value(type, kPtr, kLen) {
    const m = state.maps[type];
    if (!m) return NOT_FOUND;
    const k = str(kPtr, kLen);
    state.maps[type] = makeMap(m.pairs.filter(([n]) => n !== k));
    return OK;
  },

  proxy_get_property(pPtr, pLen, ptrPtr, sizePtr) {
    const p = str(pPtr, pLen).replace(/\0/g, '.');
    if (!quiet) state.propsAsked.set(p, (state.propsAsked.get(p) || 0) + 1);
    const v = state.properties.get(p);
    if (v === undefined) return NOT_FOUND;
    copyOut(v, 0, v.length, ptrPtr, sizePtr);
    return OK;
  },
  proxy_set_property(pPtr, pLen, vPtr, vLen) {
    state.properties.set(str(pPtr, pLen).replace(/\0/g, '.'), bytes(vPtr, vLen));
    return OK;
  },

  proxy_get_shared_data(kPtr, kLen, ptrPtr, sizePtr, casPtr) {
    const e = state.shared.get(str(kPtr, kLen));
    if (e === undefined) return NOT_FOUND;
    copyOut(e.value, 0, e.value.length, ptrPtr, sizePtr);
    views();
    dv.setUint32(casPtr, e.cas, true);
    return OK;
  },
  proxy_set_shared_data(kPtr, kLen, vPtr, vLen, cas) {
    const k = str(kPtr, kLen);
    const e = state.shared.get(k);
    if (e !== undefined && cas !== 0 && cas !== e.cas) return 8; // CasMismatch
    state.shared.set(k, { value: bytes(vPtr, vLen), cas: e ? e.cas + 1 : 1 });
    return OK;
  },
  proxy_register_shared_queue(nPtr, nLen, idPtr) { views(); dv.setUint32(idPtr, 1, true); return OK; },
  proxy_resolve_shared_queue(vPtr, vLen, nPtr, nLen, idPtr) { return NOT_FOUND; },
  proxy_enqueue_shared_queue(id, ptr, len) { return NOT_FOUND; },
  proxy_dequeue_shared_queue(id, ptrPtr, sizePtr) { return 7; }, // Empty

  proxy_define_metric(type, nPtr, nLen, idPtr) {
    const name = str(nPtr, nLen);
    let id = state.metricIds.get(name);
    if (id === undefined) {
      id = state.metricIds.size + 1;
      state.metricIds.set(name, id);
      state.metrics.set(id, { name, type, value: 0n });
    }
    views();
    dv.setUint32(idPtr, id, true);
    return OK;
  },
  proxy_increment_metric(id, offset) {
    const m = state.metrics.get(id);
    if (!m) return NOT_FOUND;
    m.value += BigInt(offset);
    return OK;
  },
  proxy_record_metric(id, value) {
    const m = state.metrics.get(id);
    if (!m) return NOT_FOUND;
    m.value = BigInt(value);
    return OK;
  },

  proxy_http_call(uPtr, uLen, hPtr, hLen, bPtr, bLen, tPtr, tLen, timeout, tokenPtr) {
    const token = state.nextToken++;
    if (quiet) {
      state.calls.push({ token });
    } else {
      state.calls.push({
        token, upstream: str(uPtr, uLen), headers: parsePairs(bytes(hPtr, hLen)),
        body: bytes(bPtr, bLen).toString(), trailers: parsePairs(bytes(tPtr, tLen)), timeout,
      });
    }
    views();
    dv.setUint32(tokenPtr, token, true);
    return OK;
  },
  proxy_send_local_response(status, dPtr, dLen, bPtr, bLen, hPtr, hLen, grpc) {
    state.localResponses++;
    state.localResponse = {
      status, details: quiet ? '' : str(dPtr, dLen), body: bytes(bPtr, bLen),
      headers: quiet ? null : parsePairs(bytes(hPtr, hLen)), hBytes: quiet && opts.full ? bytes(hPtr, hLen) : null, grpc,
    };
    return OK;
  },
  proxy_continue_stream(type) { return OK; },
  proxy_close_stream(type) { return OK; },
  proxy_get_status(codePtr, ptrPtr, sizePtr) {
    views();
    dv.setUint32(codePtr, 0, true); dv.setUint32(ptrPtr, 0, true); dv.setUint32(sizePtr, 0, true);
    return OK;
  },
  proxy_call_foreign_function() { return NOT_FOUND; },
  proxy_grpc_call() { return UNIMPLEMENTED; },
  proxy_grpc_stream() { return UNIMPLEMENTED; },
  proxy_grpc_send() { return UNIMPLEMENTED; },
  proxy_grpc_cancel() { return UNIMPLEMENTED; },
  proxy_grpc_close() { return UNIMPLEMENTED; },
};

const WASI_ERRNO_NOSYS = 52;
const wasi = {
  random_get(ptr, len) { views(); crypto.randomFillSync(u8, ptr, len); return 0; },
  environ_sizes_get(cPtr, sPtr) { views(); dv.setUint32(cPtr, 0, true); dv.setUint32(sPtr, 0, true); return 0; },
  environ_get() { return 0; },
  fd_write(fd, iovs, iovsLen, nPtr) {
    views();
    let n = 0;
    for (let i = 0; i < iovsLen; i++) {
      const p = dv.getUint32(iovs + i * 8, true), l = dv.getUint32(iovs + i * 8 + 4, true);
      if (!quiet) state.stdout.push(`[fd ${fd}] ` + decoder.decode(u8.subarray(p, p + l)));
      n += l;
    }
    dv.setUint32(nPtr, n, true);
    return 0;
  },
  proc_exit(code) { throw new Error(`wasm called proc_exit(${code})`); },
};

const { performance } = require('perf_hooks');
const PERF_BASE_MS = performance.now();
const EPOCH_BASE_NS = BigInt(Math.round((performance.timeOrigin + PERF_BASE_MS) * 1e6));
const EPOCH_LO = Number(EPOCH_BASE_NS & 0xffffffffn), EPOCH_HI = Number(EPOCH_BASE_NS >> 32n);

// Wrap every import with a counter; fail loudly on any import we do not provide. Each wrapper
// is compiled separately (new Function) so it stays monomorphic and has the exact arity.
const HC = new Float64Array(256);   // hostcall counters by import index
function makeCounted(kind, i, f, arity, label) {
  const params = Array.from({ length: arity }, (_, k) => 'a' + k).join(', ');
  const safe = label.replace(/[^A-Za-z0-9_]/g, '_');
  return new Function('C', 'f', `return function ${kind}_${safe}(${params}) { C[${i}]++; return f(${params}); };`);
}
function wrapImports(mod) {
  const out = {};
  for (const imp of WebAssembly.Module.imports(mod)) {
    if (imp.kind !== 'function') throw new Error(`unsupported import kind ${imp.module}.${imp.name} (${imp.kind})`);
    const table = imp.module === 'env' ? env : imp.module === 'wasi_snapshot_preview1' ? wasi : null;
    const f = table && table[imp.name];
    const name = imp.name;
    const idx = HOSTCALL_NAMES.length;
    HOSTCALL_NAMES.push(name);
    out[imp.module] = out[imp.module] || {};
    if (typeof f !== 'function') {
      out[imp.module][name] = (...a) => { HC[idx]++; throw new Error(`unimplemented import ${imp.module}.${name}(${a})`); };
    } else {
      out[imp.module][name] = makeCounted('host', idx, f, f.length, name)(HC, f);
    }
  }
  return out;
}
function hostcallCounts() {
  const o = Object.create(null);
  HOSTCALL_NAMES.forEach((n, i) => { o[n] = HC[i]; });
  return o;
}

// ---------------------------------------------------------------- VM wrapper
const vm = {};
function setupVm(instance) {
  ex = instance.exports;
  mem = ex.memory;
  for (const [name, f] of Object.entries(ex)) {
    if (typeof f !== 'function') continue;
    const idx = VM_NAMES.length;
    VM_NAMES.push(name);
    vm[name] = makeCounted('vm', idx, f, f.length, name)(VMC, f);
  }
  if (ex.proxy_on_memory_allocate) { allocFn = ex.proxy_on_memory_allocate; allocName = 'proxy_on_memory_allocate'; }
  else if (ex.malloc) { allocFn = ex.malloc; allocName = 'malloc'; }
  else throw new Error('module exports neither proxy_on_memory_allocate nor malloc');
  allocIdx = VM_NAMES.indexOf(allocName);
}
function has(name) { return typeof vm[name] === 'function'; }
function call(name, ...a) { return has(name) ? vm[name](...a) : undefined; }

// ---------------------------------------------------------------- one request
const ROOT = 1;
let nextCtx = 2;
let reqNo = 0;

function oneRequest() {
  const ctx = nextCtx++;
  const reqMap = REQ_POOL[reqNo++ & 255];
  state.calls.length = 0;
  state.localResponse = null;
  state.maps[0] = reqMap;       // HttpRequestHeaders
  state.maps[1] = EMPTY_MAP;    // HttpRequestTrailers (none)
  state.buffers[0] = null; state.buffers[1] = null;

  vm.proxy_on_context_create(ctx, ROOT);
  const a = vm.proxy_on_request_headers(ctx, reqMap.pairs.length, 1);
  if (a !== 1) throw new Error(`proxy_on_request_headers returned ${a}, expected 1 (Pause)`);
  if (state.calls.length !== 4) throw new Error(`expected 4 proxy_http_call, got ${state.calls.length}`);
  const tokens = state.calls.map((c) => c.token);
  for (let i = 0; i < tokens.length; i++) {
    state.maps[6] = CALL_RESP_MAPS[i];
    state.maps[7] = EMPTY_MAP;
    state.buffers[4] = UPSTREAM_BODIES[i];
    vm.proxy_on_http_call_response(ctx, tokens[i], 5, UPSTREAM_BODIES[i].length, 0);
    state.maps[6] = null; state.maps[7] = null; state.buffers[4] = null;
  }
  const lr = state.localResponse;
  if (lr === null) throw new Error('no proxy_send_local_response after the 4th call response');
  if (opts.full) {
    // Envoy encodes a local reply through the encoder filters, this one included.
    const hdrs = lr.headers || parsePairs(lr.hBytes);
    state.maps[2] = makeMap([[':status', String(lr.status)], ...hdrs, ['content-length', String(lr.body.length)]]);
    state.maps[3] = EMPTY_MAP;
    state.buffers[1] = lr.body;
    call('proxy_on_response_headers', ctx, state.maps[2].pairs.length, 0);
    call('proxy_on_response_body', ctx, lr.body.length, 1);
  }
  call('proxy_on_done', ctx); // optional: Envoy treats a missing export as done
  if (opts.full) call('proxy_on_log', ctx);
  vm.proxy_on_delete(ctx);
  state.maps[0] = state.maps[1] = state.maps[2] = state.maps[3] = null;
  state.buffers[1] = null;
  return lr;
}

// ---------------------------------------------------------------- main
function snapshot() {
  const vmc = Object.create(null);
  VM_NAMES.forEach((n, i) => { vmc[n] = VMC[i]; });
  return { hc: hostcallCounts(), vmc, allocBytes, logCount, localResponses: state.localResponses };
}
function diff(a, b) {
  const o = { hc: {}, vmc: {}, allocBytes: b.allocBytes - a.allocBytes, logCount: b.logCount - a.logCount };
  for (const k in b.hc) o.hc[k] = b.hc[k] - a.hc[k];
  for (const k in b.vmc) o.vmc[k] = b.vmc[k] - a.vmc[k];
  return o;
}
function flushLogs(prefix) {
  for (const l of logs.splice(0)) console.log(prefix + l);
  for (const l of state.stdout.splice(0)) console.log(prefix + l.trimEnd());
}

function main() {
  const mod = new WebAssembly.Module(fs.readFileSync(WASM));
  const exportNames = WebAssembly.Module.exports(mod).map((e) => e.name);
  const instance = new WebAssembly.Instance(mod, wrapImports(mod));
  setupVm(instance);
  console.log(`module: ${WASM} (${fs.statSync(WASM).size} bytes), name section: ${WebAssembly.Module.customSections(mod, 'name').length > 0 ? 'yes' : 'no'}`);
  const missing = ['proxy_on_context_create', 'proxy_on_request_headers', 'proxy_on_http_call_response', 'proxy_on_delete']
    .filter((n) => !has(n));
  if (missing.length) throw new Error('missing required exports: ' + missing.join(', '));
  const absent = ['proxy_on_response_headers', 'proxy_on_response_body', 'proxy_on_log', 'proxy_on_done', 'proxy_on_tick', '_initialize', '_start']
    .filter((n) => !exportNames.includes(n));
  if (absent.length) console.log('absent (not called): ' + absent.join(', '));

  // ---- startup, as Envoy does it
  if (has('_initialize')) vm._initialize();
  else if (has('_start')) vm._start();
  vm.proxy_on_context_create(ROOT, 0);
  const started = call('proxy_on_vm_start', ROOT, VM_CONFIG.length);
  if (started !== undefined && started !== 1) throw new Error(`proxy_on_vm_start returned ${started}`);
  const configured = call('proxy_on_configure', ROOT, PLUGIN_CONFIG.length);
  if (configured !== undefined && configured !== 1) { flushLogs('  '); throw new Error(`proxy_on_configure returned ${configured}`); }
  console.log(`startup: vm_start=${started} configure=${configured} tick_period=${state.tickPeriod}ms metrics defined=${state.metricIds.size}`);
  flushLogs('  ');

  // ---- correctness check (one request, everything recorded)
  const s0 = snapshot();
  const lr = oneRequest();
  const one = diff(s0, snapshot());
  const bodyText = lr.body.toString('utf8');
  let parsed;
  try { parsed = JSON.parse(bodyText); } catch (e) {
    throw new Error(`local response body is not valid JSON: ${e.message}\n${bodyText}`);
  }
  const keys = ['a', 'b', 'c', 'd'];
  const missingKeys = keys.filter((k) => !(parsed && typeof parsed === 'object' && k in parsed));
  if (lr.status !== 200 || missingKeys.length) {
    throw new Error(`bad local response: status=${lr.status} missing keys=${missingKeys.join(',')}\n${bodyText}`);
  }
  for (let i = 0; i < 4; i++) {
    if (JSON.stringify(parsed[keys[i]]) !== UPSTREAM_BODIES[i].toString()) {
      console.log(`note: body.${keys[i]} differs from upstream body ${i} (wrapped or transformed?)`);
    }
  }
  console.log('verification: OK');
  console.log(`  local response: status ${lr.status}, ${lr.body.length} bytes body, details "${lr.details}", headers ${JSON.stringify(lr.headers)}`);
  console.log(`  body (first 160 chars): ${bodyText.slice(0, 160)}${bodyText.length > 160 ? '...' : ''}`);
  for (const c of state.calls) {
    console.log(`  http_call token=${c.token} upstream=${c.upstream} timeout=${c.timeout}ms body=${c.body.length}B headers=${JSON.stringify(c.headers)}`);
  }
  if (state.propsAsked.size) console.log('  properties asked: ' + JSON.stringify([...state.propsAsked]));
  console.log(`  first request: ${fmtCounts(one, 1)}`);
  flushLogs('  ');

  // ---- warm-up
  quiet = true;
  let sinceTick = 0;
  const runLoop = (n) => {
    for (let i = 0; i < n; i++) {
      oneRequest();
      if (++sinceTick === 1000) { sinceTick = 0; call('proxy_on_tick', ROOT); }
    }
  };
  const tw0 = process.hrtime.bigint();
  runLoop(opts.warmup);
  const tw1 = process.hrtime.bigint();
  console.log(`warm-up: ${opts.warmup} requests, ${(Number(tw1 - tw0) / 1000 / opts.warmup).toFixed(2)} µs/request`);

  // ---- timed
  const s1 = snapshot();
  const t0 = process.hrtime.bigint();
  runLoop(N);
  const t1 = process.hrtime.bigint();
  const d = diff(s1, snapshot());
  const usPerReq = Number(t1 - t0) / 1000 / N;
  console.log(`timed:   ${N} requests in ${(Number(t1 - t0) / 1e9).toFixed(3)} s = ${usPerReq.toFixed(2)} µs/request (${Math.round(1e6 / usPerReq)} req/s)`);
  console.log(`per request (timed loop, proxy_on_tick amortized): ${fmtCounts(d, N)}`);
  console.log('hostcalls per request:');
  for (const [k, v] of Object.entries(d.hc).filter(([, v]) => v > 0).sort((x, y) => y[1] - x[1])) {
    console.log(`  ${k.padEnd(38)} ${fmtRate(v / N)}`);
  }
  console.log('calls into the VM per request:');
  for (const [k, v] of Object.entries(d.vmc).filter(([, v]) => v > 0).sort((x, y) => y[1] - x[1])) {
    console.log(`  ${k.padEnd(38)} ${fmtRate(v / N)}`);
  }
  const m = [...state.metrics.values()].filter((x) => x.value !== 0n).slice(0, 12);
  if (m.length) console.log('metrics (non-zero, first 12): ' + m.map((x) => `${x.name}=${x.value}`).join(' '));
  console.log(`wasm memory: ${(mem.buffer.byteLength / 65536) | 0} pages (${(mem.buffer.byteLength / 1048576).toFixed(1)} MiB); local responses: ${state.localResponses}`);

  if (opts.meta) {
    fs.mkdirSync(path.dirname(opts.meta), { recursive: true });
    const metaJson = JSON.stringify({
      wasm: path.resolve(WASM), pid: process.pid, full: opts.full, warmup: opts.warmup, iterations: N,
      // process.hrtime and V8's profiler timestamps both use CLOCK_MONOTONIC on Linux (µs here).
      timedStartUs: Number(t0 / 1000n), timedEndUs: Number(t1 / 1000n),
      totalRequests: opts.warmup + N + 1, usPerRequest: usPerReq,
      perRequest: {
        vmCalls: sum(d.vmc) / N, hostcalls: sum(d.hc) / N, allocBytes: d.allocBytes / N,
        hc: Object.fromEntries(Object.entries(d.hc).filter(([, v]) => v).map(([k, v]) => [k, v / N])),
        vmc: Object.fromEntries(Object.entries(d.vmc).filter(([, v]) => v).map(([k, v]) => [k, v / N])),
      },
    }, null, 1);
    fs.writeFileSync(opts.meta, metaJson);
    // also keyed by pid: the profile file name carries the pid (CPU.<date>.<time>.<pid>.0.001.cpuprofile)
    const byPid = path.join(path.dirname(opts.meta), `run-meta-${process.pid}.json`);
    fs.writeFileSync(byPid, metaJson);
    console.log(`meta: ${opts.meta} (and ${path.basename(byPid)})`);
  }
}
function fmtRate(x) { return x >= 0.01 ? x.toFixed(3) : x.toPrecision(2); }
function sum(o) { let s = 0; for (const k in o) s += o[k]; return s; }
function fmtCounts(d, n) {
  return `VM calls ${(sum(d.vmc) / n).toFixed(2)} (allocate ${((d.vmc[allocName] || 0) / n).toFixed(2)}), ` +
    `hostcalls ${(sum(d.hc) / n).toFixed(2)}, allocated ${(d.allocBytes / n).toFixed(1)} B via ${allocName}, logs ${(d.logCount / n).toFixed(2)}`;
}

try {
  main();
} catch (e) {
  flushLogs('  ');
  console.error('FAILED: ' + (e && e.message));
  if (e instanceof WebAssembly.RuntimeError) console.error('(wasm trap)');
  console.error(e && e.stack);
  process.exit(1);
}
