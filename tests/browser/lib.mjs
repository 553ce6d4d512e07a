// Shared by the browser scripts: the Debian chromium with the flags that keep
// it off the (closed) network, and a small SMTP client over a real socket.

import net from 'node:net';
import { chromium } from 'playwright-core';

export const HTTP = process.env.UNCORREO_HTTP; // http://127.0.0.1:PORT
export const SMTP = process.env.UNCORREO_SMTP; // 127.0.0.1:PORT
if (!HTTP || !SMTP) {
  console.error('set UNCORREO_HTTP and UNCORREO_SMTP (tests/it/ui.rs does)');
  process.exit(2);
}

// Playwright gives every launch a fresh temporary profile of its own (it
// refuses a --user-data-dir argument), so no state leaks between runs.
export async function launch() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    browser,
    close: () => browser.close(),
  };
}

// One SMTP session; `send` may be called many times, then `quit`.
export async function smtpSession() {
  const [host, port] = [SMTP.slice(0, SMTP.lastIndexOf(':')), Number(SMTP.slice(SMTP.lastIndexOf(':') + 1))];
  const socket = net.connect({ host, port });
  socket.setEncoding('utf8');
  let buffer = '';
  const waiting = [];
  const replies = [];
  socket.on('data', (chunk) => {
    buffer += chunk;
    let end;
    let lines = [];
    while ((end = buffer.indexOf('\r\n')) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      lines.push(line);
      if (line[3] !== '-') {
        replies.push(lines.join('\n'));
        lines = [];
      }
    }
    if (lines.length) buffer = lines.map((l) => `${l}\r\n`).join('') + buffer;
    while (waiting.length && replies.length) waiting.shift().resolve(replies.shift());
  });
  const failed = new Promise((_, reject) => socket.on('error', reject));
  const reply = () =>
    Promise.race([failed, new Promise((resolve) => (replies.length ? resolve(replies.shift()) : waiting.push({ resolve })))]);
  const expect = async (code, what) => {
    const text = await reply();
    if (!text.startsWith(String(code))) throw new Error(`SMTP ${what}: expected ${code}, got ${text}`);
    return text;
  };
  const command = (line, code) => {
    socket.write(`${line}\r\n`);
    return expect(code, line);
  };
  await expect(220, 'greeting');
  await command('EHLO browser-test.example', 250);
  return {
    async send(mail) {
      const { to, from = 'app@example.com' } = mail;
      // `From:` may be `Name <addr>`; the envelope takes the address alone.
      const envelope = (from.match(/<([^>]*)>/) || [null, from])[1];
      await command(`MAIL FROM:<${envelope}>`, 250);
      await command(`RCPT TO:<${to}>`, 250);
      await command('DATA', 354);
      socket.write(`${message({ ...mail, from }).replace(/\r?\n/g, '\r\n').replace(/\r\n\./g, '\r\n..')}\r\n.\r\n`);
      await expect(250, 'end of DATA');
    },
    async quit() {
      await command('QUIT', 221);
      socket.end();
    },
  };
}

export async function sendMail(mail) {
  const session = await smtpSession();
  await session.send(mail);
  await session.quit();
}

function message({ to, from, subject, text, html, attachment }) {
  const head = [`From: ${from}`, `To: ${to}`, `Subject: ${subject}`, `Date: ${new Date().toUTCString()}`, 'MIME-Version: 1.0'];
  if (attachment) {
    const outer = 'b-uncorreo-mixed';
    return [
      ...head,
      `Content-Type: multipart/mixed; boundary="${outer}"`,
      '',
      `--${outer}`,
      body({ text, html }),
      `--${outer}`,
      `Content-Type: ${attachment.type}; name="${attachment.filename}"`,
      `Content-Disposition: attachment; filename="${attachment.filename}"`,
      'Content-Transfer-Encoding: base64',
      '',
      Buffer.from(attachment.content).toString('base64').match(/.{1,76}/g).join('\r\n'),
      `--${outer}--`,
    ].join('\r\n');
  }
  return [...head, body({ text, html })].join('\r\n');
}

// The Content-Type header, a blank line and the body of the text/HTML part(s).
function body({ text, html }) {
  if (!html) return ['Content-Type: text/plain; charset=utf-8', '', text].join('\r\n');
  const boundary = 'b-uncorreo-browser';
  return [
    `Content-Type: multipart/alternative; boundary="${boundary}"`,
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=utf-8',
    '',
    text || 'See the HTML part.',
    `--${boundary}`,
    'Content-Type: text/html; charset=utf-8',
    '',
    html,
    `--${boundary}--`,
  ].join('\r\n');
}

// An anonymous mailbox made over the REST API; returns { address, session_token, … }.
export async function createMailbox(localPart) {
  const response = await fetch(`${HTTP}/api/v1/mailboxes`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ local_part: localPart }),
  });
  if (response.status !== 201) throw new Error(`create mailbox: ${response.status} ${await response.text()}`);
  return response.json();
}

// Make this browser context remember a mailbox as if it had created it.
export async function rememberInContext(context, created) {
  const entry = JSON.stringify([{ address: created.address, token: created.session_token, expires_at: created.expires_at }]);
  await context.addInitScript((value) => {
    if (!localStorage.getItem('uncorreo.inboxes')) localStorage.setItem('uncorreo.inboxes', value);
  }, entry);
}

// `count` messages to `to` over `connections` parallel SMTP sessions.
export async function sendMany(to, count, connections, make) {
  let next = 0;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      const session = await smtpSession();
      while (next < count) {
        const i = next++;
        await session.send({ to, ...make(i) });
      }
      await session.quit();
    }),
  );
}

export function assert(condition, what) {
  if (!condition) throw new Error(`assertion failed: ${what}`);
}
