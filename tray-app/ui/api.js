// The dashboard's one door to the agent. Inside the tray app the Rust side makes the calls (it
// holds the token) and the page invokes Tauri commands. In a plain browser (tests, or a user who
// opens ui/index.html#url=…&token=…) it fetches the control API directly. Both reject with the
// agent's error shape, {error, message}.

const TAURI_COMMANDS = {
  status: () => ['status', {}],
  toggle: (enabled) => ['toggle', { enabled }],
  getSettings: () => ['get_settings', {}],
  putSettings: (settings) => ['put_settings', { settings }],
  reputation: () => ['reputation', {}],
  agentInfo: () => ['agent_info', {}],
  join: (token) => ['join', { token }],
};

function tauriApi(invoke) {
  const api = {};
  for (const [name, args] of Object.entries(TAURI_COMMANDS)) {
    api[name] = async (...a) => {
      const [cmd, payload] = args(...a);
      try {
        return await invoke(cmd, payload);
      } catch (e) {
        throw normalize(e);
      }
    };
  }
  api.mode = 'tauri';
  return api;
}

function httpApi(loc) {
  const params = new URLSearchParams(loc.hash.replace(/^#/, ''));
  const base = (params.get('url') || loc.origin).replace(/\/$/, '');
  const token = params.get('token') || '';
  async function req(method, path, body) {
    let r;
    try {
      r = await fetch(base + path, {
        method,
        headers: {
          Authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw { error: 'agent_unreachable', message: `The agent at ${base} does not answer (${e.message}).` };
    }
    let data = null;
    try { data = await r.json(); } catch { /* not JSON */ }
    if (!r.ok) {
      throw {
        error: (data && data.error) || `http_${r.status}`,
        message: (data && (data.message || data.error)) || `The agent answered HTTP ${r.status}.`,
        status: r.status,
      };
    }
    return data;
  }
  return {
    mode: 'http',
    status: () => req('GET', '/v1/status'),
    toggle: (enabled) => req('POST', '/v1/toggle', { enabled }),
    getSettings: () => req('GET', '/v1/settings'),
    putSettings: (settings) => req('PUT', '/v1/settings', settings),
    reputation: () => req('GET', '/v1/reputation'),
    agentInfo: async () => ({ control_path: null, url: base }),
    join: (token) => req('POST', '/v1/join', { token }),
  };
}

function normalize(e) {
  if (e && typeof e === 'object' && 'error' in e) return e;
  return { error: 'app_error', message: String(e) };
}

/** The agent runs, but this computer has not joined a network: show the join form. */
export function isNotJoined(e) {
  return (e && e.error) === 'not_joined';
}

/** Errors that mean "there is no agent to talk to", as opposed to a refused request. */
export function isNoAgent(e) {
  return ['no_agent', 'agent_unreachable', 'bad_control_file'].includes(e && e.error);
}

export function makeApi(win = window) {
  const invoke = win.__TAURI__ && win.__TAURI__.core && win.__TAURI__.core.invoke;
  return invoke ? tauriApi(invoke) : httpApi(win.location);
}
