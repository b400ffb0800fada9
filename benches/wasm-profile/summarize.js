#!/usr/bin/env node
// Summarizes a V8 .cpuprofile written by `node --cpu-prof ... harness.js`: top functions by
// self and total time, as % of the window and µs per request, Rust names demangled.
//
//   node summarize.js [profile.cpuprofile | dir] [--meta=run-meta.json] [--all] [--top=40] [--total=25]
//                     [--raw] [--wasm-only] [--callers=REGEX]
//
// --callers=REGEX: for samples whose stack contains a function matching REGEX, attribute the
// time to the nearest caller (walking up) that matches neither REGEX nor the allocator/copy
// themes, e.g. --callers='dlmalloc|dlfree' answers "who allocates".
//
// By default only samples inside the timed loop are counted (the harness writes the window,
// in process.hrtime µs, to run-meta.json next to the profile; V8 profile timestamps use the
// same monotonic clock on Linux). --all counts the whole profile (µs/request then uses all
// requests the harness made). --raw prints mangled names.
'use strict';
const fs = require('fs');
const path = require('path');

const args = process.argv.slice(2);
const opt = { all: false, top: 40, total: 25, raw: false, meta: null, wasmOnly: false };
let target = 'target/wasm-profile/cpuprofile';
for (const a of args) {
  if (a === '--all') opt.all = true;
  else if (a === '--raw') opt.raw = true;
  else if (a === '--wasm-only') opt.wasmOnly = true;
  else if (a.startsWith('--top=')) opt.top = Number(a.slice(6));
  else if (a.startsWith('--total=')) opt.total = Number(a.slice(8));
  else if (a.startsWith('--meta=')) opt.meta = a.slice(7);
  else if (a.startsWith('--callers=')) opt.callers = new RegExp(a.slice(10));
  else target = a;
}
let file = target;
if (fs.statSync(target).isDirectory()) {
  const files = fs.readdirSync(target).filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => path.join(target, f)).sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  if (!files.length) { console.error(`no .cpuprofile in ${target}`); process.exit(1); }
  file = files[0];
}
const pidM = /\.(\d+)\.\d+\.\d+\.cpuprofile$/.exec(path.basename(file));
const pidMeta = pidM ? path.join(path.dirname(file), `run-meta-${pidM[1]}.json`) : null;
const metaFile = opt.meta || (pidMeta && fs.existsSync(pidMeta) ? pidMeta : path.join(path.dirname(file), 'run-meta.json'));
const meta = fs.existsSync(metaFile) ? JSON.parse(fs.readFileSync(metaFile, 'utf8')) : null;
const prof = JSON.parse(fs.readFileSync(file, 'utf8'));

// ------------------------------------------------------------------ Rust demangling
const LEGACY_ESC = { SP: '@', BP: '*', RF: '&', LT: '<', GT: '>', LP: '(', RP: ')', C: ',' };
function demangleLegacy(s) {
  // _ZN <len><ident>... E ; last ident is often a hash "h0123456789abcdef"
  let i = s.startsWith('__ZN') ? 4 : 3;
  const parts = [];
  while (i < s.length && s[i] !== 'E') {
    let j = i;
    while (j < s.length && s[j] >= '0' && s[j] <= '9') j++;
    if (j === i) return null;
    const n = Number(s.slice(i, j));
    parts.push(s.slice(j, j + n));
    i = j + n;
  }
  if (i >= s.length) return null;
  if (parts.length > 1 && /^h[0-9a-f]{16}$/.test(parts[parts.length - 1])) parts.pop();
  return parts.map((p) => {
    if (p.startsWith('_$')) p = p.slice(1);
    p = p.replace(/\$([A-Z]{1,2}|u[0-9a-f]+)\$/g, (m, c) =>
      c[0] === 'u' ? String.fromCodePoint(parseInt(c.slice(1), 16)) : (LEGACY_ESC[c] ?? m));
    return p.replace(/\.\./g, '::');
  }).join('::');
}

// Rust v0 mangling (_R...), enough of the grammar for paths, impls, generics and types.
const BASIC = { a: 'i8', b: 'bool', c: 'char', d: 'f64', e: 'str', f: 'f32', h: 'u8', i: 'isize', j: 'usize',
  l: 'i32', m: 'u32', n: 'i128', o: 'u128', s: 'i16', t: 'u16', u: '()', v: '...', x: 'i64', y: 'u64', z: '!', p: '_' };
function demangleV0(sym) {
  const s = sym.slice(2); // after _R
  let depth = 0;
  function P(pos) { return { pos }; }
  function b62(st) { // base-62 number terminated by '_'; '_' alone = 0, else value+1
    if (s[st.pos] === '_') { st.pos++; return 0; }
    let v = 0;
    while (s[st.pos] !== '_') {
      const c = s[st.pos++];
      if (c === undefined) throw new Error('eof');
      const d = c >= '0' && c <= '9' ? c.charCodeAt(0) - 48 : c >= 'a' && c <= 'z' ? c.charCodeAt(0) - 87 : c.charCodeAt(0) - 29;
      v = v * 62 + d;
    }
    st.pos++;
    return v + 1;
  }
  function disamb(st) { if (s[st.pos] === 's') { st.pos++; b62(st); } }
  function ident(st) {
    let punycode = false;
    if (s[st.pos] === 'u') { punycode = true; st.pos++; }
    let j = st.pos;
    while (s[j] >= '0' && s[j] <= '9') j++;
    const n = Number(s.slice(st.pos, j));
    st.pos = j;
    if (s[st.pos] === '_') st.pos++;
    const id = s.slice(st.pos, st.pos + n);
    st.pos += n;
    return punycode ? `{punycode:${id}}` : id;
  }
  function backref(st, fn) {
    const at = b62(st);
    if (++depth > 100) throw new Error('backref depth');
    const r = fn(P(at));
    depth--;
    return r;
  }
  function path(st) {
    const c = s[st.pos++];
    switch (c) {
      case 'C': { disamb(st); return ident(st); }
      case 'N': {
        const ns = s[st.pos++];
        const parent = path(st);
        disamb(st);
        const id = ident(st);
        if (ns === 'C') return `${parent}::{closure${id ? '#' + id : ''}}`;
        if (ns === 'S') return `${parent}::{shim${id ? ':' + id : ''}}`;
        if (ns >= 'A' && ns <= 'Z') return `${parent}::{${ns}${id ? ':' + id : ''}}`;
        return id ? `${parent}::${id}` : parent;
      }
      case 'M': { disamb(st); path(st); return `<${type(st)}>`; }
      case 'X': { disamb(st); path(st); const t = type(st); const tr = path(st); return `<${t} as ${tr}>`; }
      case 'Y': { const t = type(st); const tr = path(st); return `<${t} as ${tr}>`; }
      case 'I': {
        const base = path(st);
        const a = [];
        while (s[st.pos] !== 'E') a.push(genericArg(st));
        st.pos++;
        return `${base}<${a.join(', ')}>`;
      }
      case 'B': return backref(st, path);
      default: throw new Error(`path tag ${c}`);
    }
  }
  function genericArg(st) {
    if (s[st.pos] === 'L') { st.pos++; b62(st); return "'_"; }
    if (s[st.pos] === 'K') { st.pos++; return konst(st); }
    return type(st);
  }
  function konst(st) {
    const c = s[st.pos];
    if (c === 'B') { st.pos++; return backref(st, konst); }
    if (c === 'p') { st.pos++; return '_'; }
    const t = s[st.pos++];
    if (s[st.pos] === 'n') st.pos++;
    let j = st.pos;
    while (s[j] !== '_') j++;
    const hex = s.slice(st.pos, j);
    st.pos = j + 1;
    if (t === 'b') return hex === '1' ? 'true' : 'false';
    return hex ? String(parseInt(hex, 16)) : '0';
  }
  function fnSig(st) {
    if (s[st.pos] === 'G') { st.pos++; b62(st); }
    let pre = '';
    if (s[st.pos] === 'U') { st.pos++; pre += 'unsafe '; }
    if (s[st.pos] === 'K') { st.pos++; if (s[st.pos] === 'C') { st.pos++; pre += 'extern "C" '; } else pre += `extern "${ident(st)}" `; }
    const a = [];
    while (s[st.pos] !== 'E') a.push(type(st));
    st.pos++;
    const r = type(st);
    return `${pre}fn(${a.join(', ')})${r === '()' ? '' : ' -> ' + r}`;
  }
  function type(st) {
    const c = s[st.pos];
    if (BASIC[c] && c !== 'u' || c === 'u' && !(s[st.pos + 1] >= '0' && s[st.pos + 1] <= '9')) { st.pos++; return BASIC[c]; }
    st.pos++;
    switch (c) {
      case 'A': { const t = type(st); const n = konst(st); return `[${t}; ${n}]`; }
      case 'S': return `[${type(st)}]`;
      case 'T': { const a = []; while (s[st.pos] !== 'E') a.push(type(st)); st.pos++; return `(${a.join(', ')}${a.length === 1 ? ',' : ''})`; }
      case 'R': case 'Q': {
        if (s[st.pos] === 'L') { st.pos++; b62(st); }
        return (c === 'R' ? '&' : '&mut ') + type(st);
      }
      case 'P': return '*const ' + type(st);
      case 'O': return '*mut ' + type(st);
      case 'F': return fnSig(st);
      case 'D': {
        if (s[st.pos] === 'G') { st.pos++; b62(st); }
        const a = [];
        while (s[st.pos] !== 'E') {
          let p = path(st);
          const assoc = [];
          while (s[st.pos] === 'p') { st.pos++; const n = ident(st); assoc.push(`${n} = ${type(st)}`); }
          if (assoc.length) p = p.endsWith('>') ? p.slice(0, -1) + ', ' + assoc.join(', ') + '>' : `${p}<${assoc.join(', ')}>`;
          a.push(p);
        }
        st.pos++;
        if (s[st.pos] === 'L') { st.pos++; b62(st); }
        return 'dyn ' + a.join(' + ');
      }
      case 'B': return backref(st, type);
      default: st.pos--; return path(st);
    }
  }
  const st = P(0);
  if (s[0] >= '0' && s[0] <= '9') { while (s[st.pos] >= '0' && s[st.pos] <= '9') st.pos++; } // encoding version
  return path(st);
}
function demangle(name) {
  const w = /^(wasm-to-js:[^-]*-|js-to-wasm:[^-]*-)(.*)$/.exec(name); // V8 boundary wrappers
  if (w) return w[1] + demangle(w[2]);
  let n = name.startsWith('$') ? name.slice(1) : name;
  try {
    if (/^_?_ZN/.test(n)) return demangleLegacy(n) ?? name;
    if (n.startsWith('_R')) return demangleV0(n);
  } catch (e) { /* fall through: keep the raw name */ }
  return name;
}

// ------------------------------------------------------------------ samples in the window
const nodes = new Map();
for (const nd of prof.nodes) nodes.set(nd.id, nd);
const parent = new Map();
for (const nd of prof.nodes) for (const c of nd.children || []) parent.set(c, nd.id);

const ts = new Array(prof.samples.length);
let t = prof.startTime;
for (let i = 0; i < prof.samples.length; i++) { t += prof.timeDeltas[i]; ts[i] = t; }
let lo = prof.startTime, hi = prof.endTime, requests = null, note = 'whole profile';
if (meta && !opt.all) {
  if (meta.timedStartUs >= prof.startTime && meta.timedEndUs <= prof.endTime + 1000) {
    lo = meta.timedStartUs; hi = meta.timedEndUs; requests = meta.iterations; note = 'timed loop only';
  } else {
    note = 'whole profile (timed window from run-meta.json is outside this profile)';
  }
}
if (requests === null && meta) requests = meta.totalRequests;

function keyOf(cf) {
  const isWasm = cf.url.startsWith('wasm://');
  const fn = cf.functionName || '(anonymous)';
  return (isWasm ? 'W|' : 'J|') + fn + '|' + (isWasm ? '' : cf.url + ':' + cf.lineNumber);
}
const info = new Map(); // key -> {name, kind, self, total}
function entry(nd) {
  const k = keyOf(nd.callFrame);
  let e = info.get(k);
  if (!e) {
    const cf = nd.callFrame;
    const isWasm = cf.url.startsWith('wasm://');
    let kind;
    if (isWasm) kind = /^(wasm-to-js|js-to-wasm)/.test(cf.functionName) ? 'wrapper' : 'wasm';
    else if (cf.url.includes('harness.js')) kind = 'host-js';
    else if (cf.url === '' && /^\((garbage collector|program|idle|root)\)$/.test(cf.functionName)) kind = cf.functionName.slice(1, -1);
    else kind = cf.url === '' ? 'native' : 'node';
    const raw = cf.functionName || '(anonymous)';
    e = { key: k, raw, name: isWasm && !opt.raw ? demangle(raw) : (isWasm ? raw : `${raw} ${cf.url ? path.basename(cf.url) + ':' + (cf.lineNumber + 1) : ''}`.trim()), kind, self: 0, total: 0 };
    // V8 shares one wasm-to-js wrapper per signature: the import named is just the first user.
    if (kind === 'wrapper') e.name += ' (one wrapper per signature)';
    info.set(k, e);
  }
  return e;
}
// Distinct functions (monomorphizations) that demangle to the same text: add the hash.
function disambiguate() {
  const byName = new Map();
  for (const e of info.values()) { if (e.kind === 'wasm') (byName.get(e.name) || byName.set(e.name, []).get(e.name)).push(e); }
  for (const [, es] of byName) {
    if (es.length < 2) continue;
    for (const e of es) { const h = /17h([0-9a-f]{16})E$/.exec(e.raw); if (h) e.name += ` [h${h[1].slice(0, 6)}]`; }
  }
}
let windowUs = 0, nSamples = 0;
const kindSelf = {};
for (let i = 0; i < prof.samples.length; i++) {
  if (ts[i] < lo || ts[i] > hi) continue;
  // weight: time until the next sample (V8 records a sample's delta before it)
  const w = i + 1 < prof.samples.length ? prof.timeDeltas[i + 1] : 0;
  if (w <= 0) continue;
  windowUs += w; nSamples++;
  let id = prof.samples[i];
  const self = entry(nodes.get(id));
  self.self += w;
  kindSelf[self.kind] = (kindSelf[self.kind] || 0) + w;
  const seen = new Set();
  while (id !== undefined) {
    const e = entry(nodes.get(id));
    if (!seen.has(e)) { seen.add(e); e.total += w; }
    id = parent.get(id);
  }
}

for (const nd of prof.nodes) entry(nd);
disambiguate();

// Heuristic themes for wasm self time (first match wins). Inlined code counts for its caller.
const THEMES = [
  ['allocator: dlmalloc/dlfree (wasi-libc)', /^(dlmalloc|dlfree|dlrealloc|dlcalloc|dispose_chunk|internal_memalign|malloc|free|realloc|calloc|sbrk)$/],
  ['allocator: Rust alloc shims, RawVec, drops', /__rust_(alloc|dealloc|realloc)|__rdl_|alloc::alloc::Global|RawVec|raw_vec|alloc_impl|finish_grow|drop_in_place|::drop\b|box_free|Box<.*>::new/],
  ['memcpy/memmove/memset/memcmp', /^(memcpy|memmove|memset|memcmp|bcmp|__memcpy|__memset|__memmove|compiler_builtins::mem)/],
  ['copying: to_vec/clone/extend/push', /to_vec|::clone\b|Clone>::clone|append_elements|push_str|extend|spec_extend|Vec<T,?\s?A?>::push|::reserve|from_iter|collect|ToOwned|to_owned|String>::from|From<&str>/],
  ['JSON (serde_json)', /serde_json|serde::/],
  ['hashing (SipHash/hashbrown)', /hash|Hasher|hashbrown|sip/i],
  ['formatting (core::fmt, ints, floats)', /core::fmt|alloc::fmt|fmt::|itoa|ryu|float_to_decimal|ToString|to_string|format|Display|Debug/],
  ['proxy-wasm SDK glue', /proxy_wasm|^proxy_on_/],
  ['thread_local/RefCell plumbing', /std::thread::local|LocalKey|RefCell|core::cell/],
  ['app: gateway_aggregator', /gateway_aggregator/],
];
function themeOf(e) {
  if (e.kind === 'wrapper') return 'V8 wasm<->js wrappers';
  if (e.kind !== 'wasm') return 'outside wasm: ' + e.kind;
  for (const [t, re] of THEMES) if (re.test(e.name) || re.test(e.raw)) return t;
  return 'other wasm';
}
function crateOf(e) {
  if (e.kind !== 'wasm') return e.kind;
  let n = e.name.replace(/^<+/, '');
  const m = /^([A-Z][A-Za-z0-9]*|\[.*?\]|&\S*|\(.*?\)) as (.*)$/.exec(n); // <T as trait::...>: the trait's crate
  if (m) n = m[2].replace(/^<+/, '');
  const c = /^([A-Za-z_][A-Za-z0-9_]*)::/.exec(n);
  if (c) return c[1];
  if (/^(dlmalloc|dlfree|mem\w+|malloc|free|realloc|calloc)$/.test(n)) return 'libc';
  return '(' + n.slice(0, 30) + ')';
}

// ------------------------------------------------------------------ print
const pct = (x) => (100 * x / windowUs).toFixed(1).padStart(5) + '%';
const perReq = (x) => requests ? (x / requests).toFixed(3).padStart(7) : '    n/a';
const trunc = (s, n) => s.length > n ? s.slice(0, n - 1) + '…' : s;
console.log(`profile: ${file}${meta ? `\nmeta:    ${metaFile}` : ''}`);
console.log(`window:  ${note}: ${(windowUs / 1e6).toFixed(3)} s, ${nSamples} samples` +
  (requests ? `, ${requests} requests, ${(windowUs / requests).toFixed(2)} µs/request (profiled)` : ''));
if (meta) console.log(`harness: ${meta.usPerRequest.toFixed(2)} µs/request; per request: ${meta.perRequest.vmCalls.toFixed(2)} VM calls, ${meta.perRequest.hostcalls.toFixed(2)} hostcalls, ${meta.perRequest.allocBytes.toFixed(0)} B allocated`);
console.log('\nself time by kind:');
for (const [k, v] of Object.entries(kindSelf).sort((a, b) => b[1] - a[1])) {
  console.log(`  ${k.padEnd(18)} ${pct(v)} ${perReq(v)} µs/req`);
}
const byTheme = new Map(), byCrate = new Map();
for (const e of info.values()) {
  if (!e.self) continue;
  const th = themeOf(e), cr = crateOf(e);
  byTheme.set(th, (byTheme.get(th) || 0) + e.self);
  byCrate.set(cr, (byCrate.get(cr) || 0) + e.self);
}
console.log('\nself time by theme (heuristic, by function name; inlined code counts for its caller):');
for (const [k, v] of [...byTheme].sort((a, b) => b[1] - a[1])) console.log(`  ${k.padEnd(46)} ${pct(v)} ${perReq(v)} µs/req`);
console.log('\nself time by crate (first path segment; <T as Trait> counts for the trait):');
for (const [k, v] of [...byCrate].sort((a, b) => b[1] - a[1]).slice(0, 20)) console.log(`  ${k.padEnd(46)} ${pct(v)} ${perReq(v)} µs/req`);

const all = [...info.values()].filter((e) => !opt.wasmOnly || e.kind === 'wasm');
console.log(`\ntop ${opt.top} by SELF time (${opt.wasmOnly ? 'wasm only' : 'all'}):`);
console.log('   self%  µs/req  total%  kind     function');
for (const e of all.sort((a, b) => b.self - a.self).slice(0, opt.top)) {
  console.log(`  ${pct(e.self)} ${perReq(e.self)}  ${pct(e.total)}  ${e.kind.padEnd(8)} ${trunc(e.name, 150)}`);
}
console.log(`\ntop ${opt.total} by TOTAL time (inclusive; wasm, wrappers and host-js only):`);
console.log('  total%  µs/req   self%  kind     function');
for (const e of all.filter((e) => e.kind !== 'node' && e.kind !== 'native' && e.kind !== 'program' && e.kind !== 'root' && e.kind !== 'idle' && e.kind !== 'garbage collector').sort((a, b) => b.total - a.total).slice(0, opt.total)) {
  console.log(`  ${pct(e.total)} ${perReq(e.total)}  ${pct(e.self)}  ${e.kind.padEnd(8)} ${trunc(e.name, 150)}`);
}

if (opt.callers) {
  const skip = (e) => opt.callers.test(e.name) || opt.callers.test(e.raw) ||
    /^allocator|^copying|^memcpy/.test(themeOf(e)) || e.kind === 'wrapper';
  const acc = new Map();
  let matched = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    if (ts[i] < lo || ts[i] > hi) continue;
    const w = i + 1 < prof.samples.length ? prof.timeDeltas[i + 1] : 0;
    if (w <= 0) continue;
    let id = prof.samples[i], hit = false, who = null;
    while (id !== undefined) {
      const e = entry(nodes.get(id));
      if (!hit) { if (opt.callers.test(e.name) || opt.callers.test(e.raw)) hit = true; }
      else if (!skip(e)) { who = e; break; }
      id = parent.get(id);
    }
    if (!hit) continue;
    matched += w;
    const k = who ? who.name : '(no caller)';
    acc.set(k, (acc.get(k) || 0) + w);
  }
  console.log(`\nnearest non-allocator/copy callers of /${opt.callers.source}/ (${pct(matched)} of the window, ${perReq(matched)} µs/req):`);
  for (const [k, v] of [...acc].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`  ${pct(v)} ${perReq(v)}  ${trunc(k, 150)}`);
}
