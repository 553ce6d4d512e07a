// Inbox page: the newest messages first, live over the WebSocket.
//
// First paint needs two small requests, sent together: the mailbox (its
// TTL) and the newest page of summaries (`latest=true`). Then the feed
// opens with `since` = the end of that page, and older pages load in the
// background.
// Every summary is keyed by its sequence, so a message reaching us twice
// (replay after a reconnect, a page that overlaps the feed) shows once. The
// list renders at most `shown` rows, so a 1,000-message inbox costs the
// same first paint as a 100-message one.

import { api, Feed } from './api.js';
import { h, copyButton, errorPanel, formatCountdown, formatSize, formatTime } from './dom.js';

// Summaries in the first request, and rows added per "Show older".
const PAGE = 100;
// Summaries per background request (the API's default max_page is 500).
const BACKGROUND_PAGE = 500;

export function inboxPage(main, { address }) {
  document.title = `${address} · uncorreo`;
  const messages = new Map();
  let shown = PAGE;
  let alive = true;
  let feed = null;
  let frame = 0;
  let firstRender = true;

  const liveBadge = document.getElementById('live');
  const count = h('span', { class: 'count', id: 'message-count' });
  const ttl = h('span', { class: 'ttl muted' });
  const filter = h('input', {
    id: 'filter',
    type: 'search',
    placeholder: 'Filter by sender, subject or code',
    autocomplete: 'off',
    'aria-controls': 'messages',
  });
  const list = h('ol', { class: 'messages', id: 'messages', 'aria-label': 'Messages, newest first' });
  const more = h('button', { type: 'button', class: 'more', hidden: true }, 'Show older messages');
  const notice = h('div');

  main.append(
    h(
      'section',
      { class: 'panel inbox-head' },
      h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← Inboxes')),
      h('h1', { class: 'address', id: 'inbox-address', 'data-address': address }, address),
      h('div', { class: 'row wrap' }, copyButton(address, 'Copy address', 'primary'), count, ttl),
      h('label', { for: 'filter', class: 'visually-hidden' }, 'Filter messages'),
      filter,
    ),
    notice,
    h('section', { class: 'panel list-panel' }, list, more),
  );

  filter.addEventListener('input', () => {
    shown = PAGE;
    schedule();
  });
  more.addEventListener('click', () => {
    shown += PAGE;
    schedule();
  });

  function add(summary, isNew) {
    if (messages.has(summary.seq)) return;
    messages.set(summary.seq, { ...summary, isNew });
    schedule();
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  function render() {
    frame = 0;
    if (!alive) return;
    const needle = filter.value.trim().toLowerCase();
    const sorted = [...messages.values()].sort((a, b) => b.seq - a.seq);
    const matching = needle ? sorted.filter((m) => haystack(m).includes(needle)) : sorted;
    const rows = matching.slice(0, shown).map((m) => row(address, m));
    if (rows.length === 0) {
      rows.push(h('li', { class: 'empty muted' }, needle ? 'No message matches.' : `No mail yet. Send something to ${address}.`));
    }
    list.replaceChildren(...rows);
    more.hidden = matching.length <= shown;
    more.textContent = `Show older messages (${matching.length - Math.min(shown, matching.length)} more)`;
    count.textContent = `${messages.size} ${messages.size === 1 ? 'message' : 'messages'}`;
    if (firstRender) {
      firstRender = false;
      performance.mark('uncorreo-inbox-rendered');
      main.dataset.rendered = 'true';
    }
  }

  (async () => {
    // Both at once: the newest page does not need the mailbox's last
    // sequence first, so first paint costs one round trip, not two.
    const mailboxRequest = api.mailbox(address);
    const pageRequest = api.latestMessages(address, PAGE);
    // Neither rejection may go unhandled while the other is awaited.
    pageRequest.catch(() => {});
    let mailbox;
    try {
      mailbox = await mailboxRequest;
    } catch (error) {
      notice.replaceChildren(errorPanel(error, 'This inbox cannot be opened'));
      return;
    }
    if (!alive) return;
    ttl.dataset.expires = mailbox.expires_at;
    ttl.textContent = formatCountdown(mailbox.expires_at);
    let page;
    try {
      page = await pageRequest;
    } catch (error) {
      notice.replaceChildren(errorPanel(error, 'Could not list messages'));
      return;
    }
    if (!alive) return;
    // Where the newest page starts: everything up to it loads in the
    // background, everything after it comes over the feed.
    const since = page.messages.length ? page.messages[0].seq - 1 : page.next_since;
    for (const m of page.messages) add(normalize(m), false);
    // The first page goes into the DOM now, not at the next animation
    // frame: a frame can come after the background pages below have been
    // fetched and parsed, which would hold the first paint for them.
    if (frame) cancelAnimationFrame(frame);
    render();
    feed = new Feed(address, Math.max(page.next_since, since), {
      onMessage: (event) => add(normalize(event), true),
      onState: (state) => {
        liveBadge.textContent = state === 'live' ? 'Live' : state === 'connecting' ? 'Connecting…' : 'Reconnecting…';
        liveBadge.dataset.state = state;
      },
      onGone: () => {
        liveBadge.textContent = '';
        notice.replaceChildren(h('div', { class: 'panel error', role: 'alert' }, 'This inbox was deleted or has expired.'));
      },
    });
    loadOlder(since);
  })();

  // Everything up to and including `upTo`, oldest first, in big pages.
  async function loadOlder(upTo) {
    let cursor = 0;
    while (alive && cursor < upTo) {
      let page;
      try {
        page = await api.messages(address, cursor, BACKGROUND_PAGE);
      } catch {
        return;
      }
      for (const m of page.messages) if (m.seq <= upTo) add(normalize(m), false);
      if (page.messages.length === 0 || page.next_since <= cursor) return;
      cursor = page.next_since;
    }
  }

  return () => {
    alive = false;
    if (feed) feed.stop();
    if (frame) cancelAnimationFrame(frame);
  };
}

// One shape for REST summaries and WebSocket events.
function normalize(m) {
  return {
    seq: m.seq,
    id: m.id || m.message_id,
    from: m.from || '',
    subject: m.subject || '',
    received_at: m.received_at,
    size: m.size || 0,
    attachments: m.attachments || 0,
    plus_tag: m.plus_tag || null,
    codes: Array.isArray(m.codes) ? m.codes : [],
    links: Array.isArray(m.links) ? m.links : [],
  };
}

// `Name <addr>` → `Name`; a bare address stays as it is.
function senderName(from) {
  const named = /^\s*"?([^"<]*?)"?\s*<[^>]*>\s*$/.exec(from);
  return named && named[1] ? named[1] : from;
}

function haystack(m) {
  if (!m.haystack) m.haystack = [m.from, m.subject, m.plus_tag || '', ...m.codes].join('\n').toLowerCase();
  return m.haystack;
}

function row(address, m) {
  const href = `#/inbox/${encodeURIComponent(address)}/${encodeURIComponent(m.id)}`;
  return h(
    'li',
    { class: m.isNew ? 'message new' : 'message', 'data-seq': m.seq, 'data-id': m.id },
    h(
      'a',
      { class: 'open', href },
      h('span', { class: 'from', title: m.from }, senderName(m.from) || '(no sender)'),
      h('span', { class: 'subject' }, m.subject || '(no subject)'),
      h(
        'span',
        { class: 'meta muted' },
        h('time', { datetime: m.received_at }, formatTime(m.received_at)),
        ' · ',
        formatSize(m.size),
        m.attachments > 0 ? h('span', { class: 'clip' }, ` · ${m.attachments} ${m.attachments === 1 ? 'attachment' : 'attachments'}`) : null,
        m.plus_tag ? h('span', { class: 'tag' }, ` · +${m.plus_tag}`) : null,
      ),
    ),
    m.codes.length ? h('span', { class: 'codes' }, m.codes.map((code) => copyButton(code, code, 'code'))) : null,
  );
}
