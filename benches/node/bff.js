// Benchmark comparison: a Node.js BFF doing the same aggregation as the filter
// (`make bench`, benches/run.py). Node's standard library only, a single process.
//
//   GET /agg, /agg/delay, /agg/timeout  -> 4 parallel calls to a..d (Promise.all over a
//   keep-alive http.Agent), each body JSON.parse'd, the combined object JSON.stringify'd.
//   Same per-call timeouts as the filter: 1000 ms, and 200 ms for d in /agg/timeout. A failed
//   call (timeout, error, non-2xx, invalid JSON) is left out and _meta.complete is false.
//
//   node benches/node/bff.js [PORT]    (default 18004; upstream ports from UPSTREAM_PORTS,
//                                       default "18101,18102,18103,18104" for a,b,c,d)
'use strict';

const http = require('http');

const PORT = Number(process.argv[2] || process.env.PORT || 18004);
const UPSTREAM_PORTS = (process.env.UPSTREAM_PORTS || '18101,18102,18103,18104')
  .split(',')
  .map(Number);
const NAMES = ['a', 'b', 'c', 'd'];

const agent = new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 256 });

function calls(upstreamPath, lastPath, lastTimeout) {
  return NAMES.map((name, i) => ({
    name,
    port: UPSTREAM_PORTS[i],
    path: i === 3 ? lastPath : upstreamPath,
    timeoutMs: i === 3 ? lastTimeout : 1000,
  }));
}

const ROUTES = {
  '/agg': calls('/0ms', '/0ms', 1000),
  '/agg/delay': calls('/delay', '/delay', 1000),
  '/agg/timeout': calls('/0ms', '/slow', 200),
};

// One upstream call: resolves to the parsed body, or undefined when the call failed.
function fetchJson(call) {
  return new Promise((resolve) => {
    let settled = false;
    const done = (value) => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        resolve(value);
      }
    };
    const req = http.get(
      { agent, host: '127.0.0.1', port: call.port, path: call.path, headers: { host: call.name } },
      (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () => {
          if (res.statusCode < 200 || res.statusCode >= 300) return done(undefined);
          try {
            done(JSON.parse(Buffer.concat(chunks).toString('utf8')));
          } catch (_) {
            done(undefined);
          }
        });
        res.on('error', () => done(undefined));
      },
    );
    // A total timeout for the call (not a socket idle timeout): destroy and give up.
    const timer = setTimeout(() => {
      req.destroy(new Error('timeout'));
      done(undefined);
    }, call.timeoutMs);
    req.on('error', () => done(undefined));
  });
}

function send(res, status, body, complete) {
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'x-aggregation-complete': String(complete),
  });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const q = req.url.indexOf('?');
  const path = q < 0 ? req.url : req.url.slice(0, q);
  const route = req.method === 'GET' ? ROUTES[path] : undefined;
  if (route === undefined) {
    send(res, 404, '{"error":"not found"}', false);
    return;
  }
  Promise.all(route.map(fetchJson)).then((bodies) => {
    const out = {};
    let complete = true;
    route.forEach((call, i) => {
      if (bodies[i] === undefined) complete = false;
      else out[call.name] = bodies[i];
    });
    out._meta = { complete };
    send(res, 200, JSON.stringify(out), complete);
  });
});

server.keepAliveTimeout = 65000;
server.listen(PORT, '127.0.0.1', () => {
  process.stdout.write(`bff listening on 127.0.0.1:${PORT}\n`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
