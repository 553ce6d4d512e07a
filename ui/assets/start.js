// Start page: create an inbox (anonymous, or owned by a saved API key),
// list the inboxes this browser created or the key owns, delete them.

import { api, store, ApiError } from './api.js';
import { h, copyButton, errorPanel, formatCountdown } from './dom.js';

export function startPage(main) {
  document.title = 'uncorreo';
  const status = h('p', { class: 'muted', role: 'status', 'aria-live': 'polite' });
  const local = h('input', {
    id: 'local-part',
    name: 'local-part',
    autocomplete: 'off',
    spellcheck: 'false',
    maxlength: '64',
    pattern: '[a-z0-9._\\-]*',
    placeholder: 'random',
    'aria-describedby': 'local-part-help',
  });
  const createButton = h('button', { type: 'submit', id: 'create-inbox', class: 'primary' }, 'Create inbox');
  const form = h(
    'form',
    {
      class: 'create',
      on: {
        submit: async (event) => {
          event.preventDefault();
          createButton.disabled = true;
          status.textContent = 'Creating…';
          try {
            const request = local.value.trim() ? { local_part: local.value.trim().toLowerCase() } : {};
            const key = store.apiKey();
            const created = await api.createMailbox(request, key || undefined);
            if (created.session_token) {
              store.remember({
                address: created.address,
                token: created.session_token,
                expires_at: created.expires_at,
              });
            }
            location.hash = `#/inbox/${encodeURIComponent(created.address)}`;
          } catch (error) {
            status.textContent = `Could not create the inbox: ${error.message}`;
            createButton.disabled = false;
          }
        },
      },
    },
    h('label', { for: 'local-part' }, 'Address'),
    h('div', { class: 'row' }, local, createButton),
    h('p', { id: 'local-part-help', class: 'muted small' }, 'Leave empty for a random address. Letters a–z, digits, dot, dash, underscore.'),
  );

  const list = h('ul', { class: 'inboxes', id: 'inbox-list', 'aria-label': 'Your inboxes' });
  const keyPanel = apiKeyPanel(() => refresh());
  main.append(
    h(
      'section',
      { class: 'panel hero' },
      h('h1', {}, 'Disposable inboxes'),
      h('p', {}, 'Create an inbox, send mail to it over SMTP, and watch it arrive here live.'),
      form,
      status,
    ),
    h('section', { class: 'panel' }, h('h2', {}, 'Your inboxes'), list),
    keyPanel,
  );

  let alive = true;
  async function refresh() {
    const rows = await loadInboxes();
    if (!alive) return;
    list.replaceChildren(...(rows.length ? rows.map((m) => inboxRow(m, refresh)) : [h('li', { class: 'muted' }, 'None yet.')]));
  }
  refresh();
  return () => {
    alive = false;
  };
}

// The remembered anonymous inboxes that still exist, then the key's own.
async function loadInboxes() {
  const found = new Map();
  await Promise.all(
    store.inboxes().map(async (inbox) => {
      try {
        found.set(inbox.address, await api.mailbox(inbox.address));
      } catch (error) {
        if (error instanceof ApiError && (error.status === 404 || error.status === 401)) store.forget(inbox.address);
      }
    }),
  );
  const key = store.apiKey();
  if (key) {
    try {
      for (const m of (await api.listMailboxes(key)).mailboxes) found.set(m.address, m);
    } catch (error) {
      found.set('', { error });
    }
  }
  return [...found.values()].sort((a, b) => (b.created_at || '').localeCompare(a.created_at || ''));
}

function inboxRow(m, refresh) {
  if (m.error) return h('li', {}, errorPanel(m.error, 'The API key was refused'));
  const count = `${m.message_count} ${m.message_count === 1 ? 'message' : 'messages'}`;
  return h(
    'li',
    { class: 'inbox' },
    h('a', { class: 'address', href: `#/inbox/${encodeURIComponent(m.address)}` }, m.address),
    h('span', { class: 'count' }, count),
    h('span', { class: 'ttl muted', 'data-expires': m.expires_at }, formatCountdown(m.expires_at)),
    h(
      'span',
      { class: 'actions' },
      copyButton(m.address, 'Copy address'),
      h(
        'button',
        {
          type: 'button',
          class: 'danger',
          'aria-label': `Delete ${m.address}`,
          on: {
            click: async () => {
              if (!confirm(`Delete ${m.address} and all its messages?`)) return;
              try {
                await api.deleteMailbox(m.address);
              } catch (error) {
                // 401: the inbox's token opens nothing any more (it expired).
                if (!(error instanceof ApiError && (error.status === 404 || error.status === 401))) {
                  alert(`Could not delete: ${error.message}`);
                  return;
                }
              }
              store.forget(m.address);
              refresh();
            },
          },
        },
        'Delete',
      ),
    ),
  );
}

function apiKeyPanel(changed) {
  const input = h('input', {
    id: 'api-key',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    placeholder: 'uct_…',
  });
  const state = h('p', { class: 'muted small', role: 'status' });
  const show = () => {
    const key = store.apiKey();
    state.textContent = key ? `Using key ${key.slice(0, 12)}…: new inboxes belong to its user.` : 'No key saved: new inboxes are anonymous.';
  };
  show();
  return h(
    'section',
    { class: 'panel' },
    h(
      'details',
      { open: store.apiKey() ? true : null },
      h('summary', {}, 'API key'),
      h('p', { class: 'small' }, 'Paste a key once; it stays in this browser (localStorage) and is sent only to this server.'),
      h('label', { for: 'api-key' }, 'API key'),
      h(
        'div',
        { class: 'row' },
        input,
        h(
          'button',
          {
            type: 'button',
            on: {
              click: () => {
                store.setApiKey(input.value.trim());
                input.value = '';
                show();
                changed();
              },
            },
          },
          'Save key',
        ),
        h(
          'button',
          {
            type: 'button',
            on: {
              click: () => {
                store.setApiKey('');
                show();
                changed();
              },
            },
          },
          'Forget key',
        ),
      ),
      state,
    ),
  );
}
