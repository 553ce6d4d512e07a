// The first thing the page runs: a classic script, first in <head>, that
// sends the inbox page's two first requests (the mailbox, and its newest
// page of summaries) before the stylesheet and the bundled module have
// arrived and been compiled. The bundle adopts them (`call` in api.js)
// when it asks for the same path with the same credential; if anything here
// drifts from api.js, nothing is adopted and the page just asks again.
'use strict';
(() => {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  if (parts[0] !== 'inbox' || parts.length !== 2) return;
  let address;
  let credential = '';
  try {
    address = decodeURIComponent(parts[1]);
    const inboxes = JSON.parse(localStorage.getItem('uncorreo.inboxes')) || [];
    const inbox = Array.isArray(inboxes) ? inboxes.find((i) => i && i.address === address) : null;
    credential = (inbox && inbox.token) || localStorage.getItem('uncorreo.apiKey') || '';
  } catch {
    return;
  }
  const box = `/api/v1/mailboxes/${encodeURIComponent(address)}`;
  const early = new Map();
  for (const path of [box, `${box}/messages?latest=true&limit=100`]) {
    const response = fetch(path, {
      method: 'GET',
      headers: credential ? { authorization: `Bearer ${credential}` } : {},
      cache: 'no-store',
    });
    // A request the page never adopts must not report an unhandled rejection.
    response.catch(() => {});
    early.set(path, { credential, response });
  }
  window.uncorreoEarlyRequests = early;
})();
