// Message page: codes and links with copy buttons, then tabs for the text,
// the HTML (in a sandboxed frame the API serves with its own CSP), the
// headers, the raw source and the attachments.

import { api } from './api.js';
import { h, copyButton, errorPanel, formatSize, formatTime } from './dom.js';

// Raw source shown inline at most; the download has all of it.
const RAW_SHOWN = 512 * 1024;

export function messagePage(main, { address, id }) {
  document.title = `Message · ${address} · uncorreo`;
  let alive = true;
  const back = h('p', { class: 'crumbs' }, h('a', { href: `#/inbox/${encodeURIComponent(address)}` }, `← ${address}`));
  main.append(back);

  (async () => {
    let message;
    try {
      message = await api.message(address, id);
    } catch (error) {
      main.append(errorPanel(error, 'This message cannot be read'));
      return;
    }
    if (!alive) return;
    const subject = message.subject || '(no subject)';
    document.title = `${subject} · uncorreo`;
    main.append(
      h(
        'section',
        { class: 'panel message-head' },
        h('h1', { id: 'message-subject' }, subject),
        h(
          'dl',
          { class: 'fields' },
          field('From', addresses(message.from) || message.envelope_from),
          field('To', addresses(message.to)),
          message.cc.length ? field('Cc', addresses(message.cc)) : null,
          field('Date', message.date ? formatTime(message.date) : '—'),
          field('Received', `${formatTime(message.received_at)} · ${formatSize(message.size)}`),
        ),
        extracted(message),
      ),
      tabs(address, message),
    );
  })();

  return () => {
    alive = false;
  };
}

function field(name, value) {
  return [h('dt', {}, name), h('dd', {}, value || '—')];
}

function addresses(list) {
  return (list || [])
    .map((a) => (a.name && a.address ? `${a.name} <${a.address}>` : a.address || a.name || ''))
    .filter(Boolean)
    .join(', ');
}

function extracted(message) {
  const parts = [];
  if (message.codes.length) {
    parts.push(h('h2', {}, 'Codes'), h('p', { class: 'codes', id: 'codes' }, message.codes.map((c) => copyButton(c, c, 'code'))));
  }
  const links = message.links.filter((l) => /^https?:\/\//i.test(l));
  if (links.length) {
    parts.push(
      h('h2', {}, 'Links'),
      h(
        'ul',
        { class: 'links', id: 'links' },
        links.map((link) =>
          h('li', {}, h('a', { href: link, target: '_blank', rel: 'noopener noreferrer' }, link), ' ', copyButton(link, 'Copy link')),
        ),
      ),
    );
  }
  return parts.length ? h('div', { class: 'extracted' }, parts) : null;
}

function tabs(address, message) {
  const defs = [
    { key: 'text', label: 'Text', build: () => h('pre', { class: 'body-text' }, message.text || '(no text body)') },
    { key: 'html', label: 'HTML', build: () => htmlView(address, message) },
    { key: 'headers', label: 'Headers', build: () => headersView(message) },
    { key: 'raw', label: 'Raw', build: () => rawView(address, message) },
    { key: 'attachments', label: `Attachments (${message.attachments.length})`, build: () => attachmentsView(address, message) },
  ];
  const tablist = h('div', { role: 'tablist', 'aria-label': 'Message views', class: 'tabs' });
  const panels = h('div', { class: 'tab-panels' });
  const buttons = [];
  const built = new Map();

  function select(index, focus) {
    defs.forEach((def, i) => {
      const selected = i === index;
      buttons[i].setAttribute('aria-selected', String(selected));
      buttons[i].tabIndex = selected ? 0 : -1;
      const panel = built.get(def.key);
      if (panel) panel.hidden = !selected;
    });
    const def = defs[index];
    if (!built.has(def.key)) {
      const panel = h('div', { role: 'tabpanel', id: `panel-${def.key}`, 'aria-labelledby': `tab-${def.key}`, tabindex: '0' }, def.build());
      built.set(def.key, panel);
      panels.append(panel);
    }
    if (focus) buttons[index].focus();
  }

  defs.forEach((def, i) => {
    const button = h(
      'button',
      {
        type: 'button',
        role: 'tab',
        id: `tab-${def.key}`,
        'aria-controls': `panel-${def.key}`,
        on: {
          click: () => select(i, false),
          keydown: (event) => {
            const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
            if (step) {
              event.preventDefault();
              select((i + step + defs.length) % defs.length, true);
            } else if (event.key === 'Home' || event.key === 'End') {
              event.preventDefault();
              select(event.key === 'Home' ? 0 : defs.length - 1, true);
            }
          },
        },
      },
      def.label,
    );
    buttons.push(button);
    tablist.append(button);
  });
  select(0, false);
  return h('section', { class: 'panel' }, tablist, panels);
}

// The frame has neither allow-scripts nor allow-same-origin, and its
// document comes with a CSP that forbids script and (unless asked) remote
// images. allow-popups lets a link open in a new tab (target=_blank, so no
// opener); the referrer policy keeps our URL out of the request.
function htmlView(address, message) {
  if (!message.html) return h('p', { class: 'muted' }, '(no HTML body)');
  let remote = false;
  const frame = h('iframe', {
    class: 'html-body',
    id: 'html-frame',
    title: 'HTML body of the message',
    sandbox: 'allow-popups allow-popups-to-escape-sandbox',
    referrerpolicy: 'no-referrer',
    src: api.htmlUrl(address, message.id, false),
  });
  const note = h('span', { class: 'muted small' }, 'Remote images are blocked.');
  const toggle = h(
    'button',
    {
      type: 'button',
      id: 'remote-images',
      'aria-pressed': 'false',
      on: {
        click: () => {
          remote = !remote;
          toggle.setAttribute('aria-pressed', String(remote));
          toggle.textContent = remote ? 'Block remote images' : 'Load remote images';
          note.textContent = remote ? 'Remote images are loaded: the sender can see that you opened this.' : 'Remote images are blocked.';
          frame.src = api.htmlUrl(address, message.id, remote);
        },
      },
    },
    'Load remote images',
  );
  return h('div', {}, h('div', { class: 'row wrap toolbar' }, toggle, note), frame);
}

function headersView(message) {
  return h(
    'table',
    { class: 'headers' },
    h('caption', { class: 'visually-hidden' }, 'Headers in order'),
    h('tbody', {}, message.headers.map((hd) => h('tr', {}, h('th', { scope: 'row' }, hd.name), h('td', {}, hd.value)))),
  );
}

function rawView(address, message) {
  const pre = h('pre', { class: 'raw' }, 'Loading…');
  api
    .raw(address, message.id)
    .then((text) => {
      pre.textContent = text.length > RAW_SHOWN ? `${text.slice(0, RAW_SHOWN)}\n… (${formatSize(text.length)}; download for all of it)` : text;
    })
    .catch((error) => pre.replaceWith(errorPanel(error, 'Could not read the raw message')));
  return h(
    'div',
    {},
    h('div', { class: 'row toolbar' }, downloadButton('Download .eml', `${message.id}.eml`, () => api.raw(address, message.id).then((t) => new Blob([t], { type: 'message/rfc822' })))),
    pre,
  );
}

function attachmentsView(address, message) {
  if (!message.attachments.length) return h('p', { class: 'muted' }, 'No attachments.');
  return h(
    'ul',
    { class: 'attachments' },
    message.attachments.map((a) => {
      const name = a.filename || `attachment-${a.index}`;
      return h(
        'li',
        {},
        h('span', { class: 'name' }, name),
        h('span', { class: 'muted small' }, ` ${a.content_type} · ${formatSize(a.size)} `),
        downloadButton(`Download ${name}`, name, () => api.attachment(address, message.id, a.index)),
      );
    }),
  );
}

// Downloads go through fetch (with the credential header), then a blob URL.
function downloadButton(label, filename, fetchBlob) {
  return h(
    'button',
    {
      type: 'button',
      on: {
        click: async (event) => {
          const button = event.currentTarget;
          button.disabled = true;
          try {
            const url = URL.createObjectURL(await fetchBlob());
            const link = h('a', { href: url, download: filename, class: 'offscreen' });
            document.body.append(link);
            link.click();
            link.remove();
            setTimeout(() => URL.revokeObjectURL(url), 10000);
          } catch (error) {
            alert(`Download failed: ${error.message}`);
          } finally {
            button.disabled = false;
          }
        },
      },
    },
    label,
  );
}
