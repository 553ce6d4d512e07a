// The appliance's REST API and WebSocket, from the same origin, plus what
// this browser remembers (localStorage): the inboxes it created with their
// session tokens, and an optional API key.

const INBOXES = 'uncorreo.inboxes';
const API_KEY = 'uncorreo.apiKey';

function readJson(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key));
    return value ?? fallback;
  } catch {
    return fallback;
  }
}

export const store = {
  inboxes() {
    const list = readJson(INBOXES, []);
    return Array.isArray(list) ? list.filter((i) => i && typeof i.address === 'string') : [];
  },
  remember(inbox) {
    const list = store.inboxes().filter((i) => i.address !== inbox.address);
    list.push(inbox);
    localStorage.setItem(INBOXES, JSON.stringify(list));
  },
  forget(address) {
    localStorage.setItem(INBOXES, JSON.stringify(store.inboxes().filter((i) => i.address !== address)));
  },
  apiKey() {
    return localStorage.getItem(API_KEY) || '';
  },
  setApiKey(key) {
    if (key) localStorage.setItem(API_KEY, key);
    else localStorage.removeItem(API_KEY);
  },
  // The credential that opens `address`: its session token, else the API key.
  credential(address) {
    const inbox = store.inboxes().find((i) => i.address === address);
    return (inbox && inbox.token) || store.apiKey();
  },
};

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

// The response to `GET path` that boot.js already sent with the same
// credential, taken once; else undefined.
function adoptEarly(method, path, credential) {
  const early = window.uncorreoEarlyRequests;
  const request = method === 'GET' && early ? early.get(path) : undefined;
  if (!request || request.credential !== (credential || '')) return undefined;
  early.delete(path);
  return request.response;
}

async function call(method, path, { credential, body, as = 'json' } = {}) {
  const headers = {};
  if (credential) headers.authorization = `Bearer ${credential}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await (adoptEarly(method, path, credential) ||
    fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    }));
  if (!response.ok) {
    let problem = null;
    try {
      problem = await response.json();
    } catch {
      // Not problem+json: the status says enough.
    }
    throw new ApiError(response.status, problem);
  }
  if (response.status === 204) return null;
  if (as === 'text') return response.text();
  if (as === 'blob') return response.blob();
  return response.json();
}

const box = (address) => `/api/v1/mailboxes/${encodeURIComponent(address)}`;

export const api = {
  createMailbox(request, apiKey) {
    return call('POST', '/api/v1/mailboxes', { credential: apiKey, body: request });
  },
  listMailboxes(apiKey) {
    return call('GET', '/api/v1/mailboxes', { credential: apiKey });
  },
  mailbox(address) {
    return call('GET', box(address), { credential: store.credential(address) });
  },
  deleteMailbox(address) {
    return call('DELETE', box(address), { credential: store.credential(address) });
  },
  messages(address, since, limit) {
    return call('GET', `${box(address)}/messages?since=${since}&limit=${limit}`, {
      credential: store.credential(address),
    });
  },
  // The newest `limit` sequence numbers, oldest first.
  latestMessages(address, limit) {
    return call('GET', `${box(address)}/messages?latest=true&limit=${limit}`, {
      credential: store.credential(address),
    });
  },
  message(address, id) {
    return call('GET', `${box(address)}/messages/${encodeURIComponent(id)}`, {
      credential: store.credential(address),
    });
  },
  raw(address, id) {
    return call('GET', `${box(address)}/messages/${encodeURIComponent(id)}/raw`, {
      credential: store.credential(address),
      as: 'text',
    });
  },
  attachment(address, id, index) {
    return call('GET', `${box(address)}/messages/${encodeURIComponent(id)}/attachments/${index}`, {
      credential: store.credential(address),
      as: 'blob',
    });
  },
  // The sandboxed HTML view is an <iframe src>, which cannot send headers.
  htmlUrl(address, id, remoteImages) {
    const token = encodeURIComponent(store.credential(address));
    return `${box(address)}/messages/${encodeURIComponent(id)}/html?remote_images=${remoteImages}&token=${token}`;
  },
};

// Largest wait between reconnection attempts.
const MAX_BACKOFF_MS = 5000;

// A mailbox's live feed over the WebSocket. Resumes after any drop with
// `since` = the highest sequence it has passed on, so the caller sees every
// message once: no gap, no duplicate (the server replays past `since`, and
// this drops any sequence it already delivered).
export class Feed {
  constructor(address, since, { onMessage, onState, onGone }) {
    this.address = address;
    this.since = since;
    this.onMessage = onMessage;
    this.onState = onState;
    this.onGone = onGone;
    this.backoff = 250;
    this.stopped = false;
    this.socket = null;
    this.timer = null;
    this.reconnectNow = () => {
      if (!this.socket && !this.stopped) {
        clearTimeout(this.timer);
        this.connect();
      }
    };
    window.addEventListener('online', this.reconnectNow);
    this.connect();
  }

  connect() {
    this.timer = null;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const token = encodeURIComponent(store.credential(this.address));
    const url = `${scheme}://${location.host}/ws/inbox/${encodeURIComponent(this.address)}?since=${this.since}&token=${token}`;
    this.onState('connecting');
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.addEventListener('open', () => {
      this.backoff = 250;
      this.onState('live');
    });
    socket.addEventListener('message', (frame) => {
      let event;
      try {
        event = JSON.parse(frame.data);
      } catch {
        return;
      }
      if (event.event !== 'new_message' || typeof event.seq !== 'number' || event.seq <= this.since) return;
      this.since = event.seq;
      this.onMessage(event);
    });
    socket.addEventListener('close', (closed) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      if (closed.code === 4004) {
        this.stop();
        this.onGone();
        return;
      }
      this.onState('reconnecting');
      this.timer = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    });
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    window.removeEventListener('online', this.reconnectNow);
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000);
    }
  }
}
