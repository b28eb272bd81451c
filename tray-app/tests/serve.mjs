// The page's origin in the dashboard tests: a small static server for ui/ that forwards /v1/* to
// the agent's control API, so the page is same-origin as it is in the tray app.
import { readFileSync, existsSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { join, dirname, extname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ui = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'ui');
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.png': 'image/png' };

/** Serves ui/ on a free loopback port, forwarding /v1/* to `agentUrl()` (asked on every request,
 * since an agent may move to another port). Resolves to `{ base, server }`. */
export async function serveUi(agentUrl) {
  const server = createServer((req, res) => {
    if (req.url.startsWith('/v1/')) {
      const agent = new URL(agentUrl());
      const up = httpRequest({
        host: agent.hostname, port: agent.port, path: req.url, method: req.method, headers: req.headers,
      }, (r) => { res.writeHead(r.statusCode, r.headers); r.pipe(res); });
      up.on('error', (e) => {
        res.writeHead(502, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: 'agent_unreachable', message: `The agent does not answer (${e.code}).` }));
      });
      req.pipe(up);
      return;
    }
    const path = new URL(req.url, 'http://x').pathname;
    const file = join(ui, path === '/' ? 'index.html' : path);
    if (!file.startsWith(ui) || !existsSync(file)) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] || 'application/octet-stream' });
    res.end(readFileSync(file));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { base: `http://127.0.0.1:${server.address().port}`, server };
}
