// nginx + njs peer (`make bench`, benches/run.py; loaded by benches/nginx/nginx.conf): the
// aggregation in nginx itself, four subrequests at once (`Promise.all(r.subrequest)`), the
// bodies concatenated into one object as the compiled BFF does (not parsed):
// {"a":<body>,...,"_meta":{"complete":true}}. A failed call (timeout, error, non-2xx, empty
// body) is left out and complete is false. Written for Debian's njs (0.7.x).
//
//   /agg -> /_a../_d (upstream /0ms)   /agg/delay -> /_delay_a.. (/delay)
//   /agg/timeout -> /_a../_c and /_slow_d (/slow, proxy_read_timeout 200 ms)
const NAMES = ['a', 'b', 'c', 'd'];
const ROUTES = {
  '/agg': ['/_a', '/_b', '/_c', '/_d'],
  '/agg/delay': ['/_delay_a', '/_delay_b', '/_delay_c', '/_delay_d'],
  '/agg/timeout': ['/_a', '/_b', '/_c', '/_slow_d'],
};

async function agg(r) {
  const route = ROUTES[r.uri];
  if (route === undefined || r.method !== 'GET') {
    r.headersOut['Content-Type'] = 'application/json';
    r.return(404, '{"error":"not found"}');
    return;
  }
  const replies = await Promise.all(route.map((uri) => r.subrequest(uri)));
  let out = '{';
  let complete = true;
  replies.forEach((reply, i) => {
    const body = reply.responseText;
    if (reply.status >= 200 && reply.status < 300 && body) {
      out += '"' + NAMES[i] + '":' + body + ',';
    } else {
      complete = false;
    }
  });
  r.headersOut['Content-Type'] = 'application/json';
  r.headersOut['x-aggregation-complete'] = String(complete);
  r.return(200, out + '"_meta":{"complete":' + complete + '}}');
}

export default { agg };
