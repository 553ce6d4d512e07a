// The npm `mailpit-api` client pointed at host B of a cluster for mailboxes
// host A keeps (SCALE.md, "Mailpit"). tests/it/cluster_mailpit.rs starts
// both hosts, creates the mailboxes through B and runs this file; any failed
// assertion exits non-zero.
import assert from "node:assert/strict";
import { MailpitClient } from "mailpit-api";
import nodemailer from "nodemailer";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing environment variable ${name}`);
  return v;
};
const BASE = env("MAILPIT_BASE");
const [TOKEN, BOX, KEY, KEY_MESSAGE, KEY_BOX] = ["TOKEN", "BOX", "KEY", "KEY_MESSAGE", "KEY_BOX"].map(env);

const client = (password) => new MailpitClient(BASE, { auth: { username: "ci@example.test", password } });
const session = client(TOKEN);
const keyed = client(KEY);

const smtp = nodemailer.createTransport({
  host: "127.0.0.1",
  port: Number(env("SMTP_PORT")),
  secure: false,
  ignoreTLS: true,
});
const pdf = Buffer.from("%PDF-1.4 across hosts \x00\x01\xff", "latin1");
const rejects = async (promise, status) => {
  await assert.rejects(promise, (e) => {
    assert.match(String(e.message), new RegExp(`Mailpit API Error: ${status} `));
    return true;
  });
};

const steps = [];
const step = (name, fn) => steps.push([name, fn]);
let first;

step("send over SMTP at B, waitForMessage with the session token", async () => {
  await smtp.sendMail({
    from: '"Shop" <noreply@shop.example>',
    to: BOX,
    subject: "Hello across hosts",
    text: "Your code is 771204.",
    attachments: [{ filename: "report.pdf", content: pdf, contentType: "application/pdf" }],
  });
  first = await session.waitForMessage({ query: 'subject:"Hello across hosts"' }, { timeout: 10000, interval: 100 });
  assert.match(first.Text, /Your code is 771204/);
  assert.equal(first.Attachments.length, 1);
});

step("headers, raw, latest and the attachment", async () => {
  const h = await session.getMessageHeaders(first.ID);
  assert.deepEqual(h.Subject, ["Hello across hosts"]);
  const raw = await session.getMessageSource(first.ID);
  assert.match(raw, /\r\nSubject: Hello across hosts\r\n/);
  assert.equal(await session.getMessageSource("latest"), raw);
  const blob = await session.getMessageAttachment(first.ID, first.Attachments[0].PartID);
  assert.deepEqual(Buffer.from(await blob.arrayBuffer()), pdf);
});

step("JSON send, list and search", async () => {
  const sent = await session.sendMessage({
    From: { Email: "app@example.com" },
    To: [{ Email: BOX }],
    Subject: "Second",
    Text: "hello again",
  });
  const list = await session.listMessages();
  assert.equal(list.total, 2);
  assert.deepEqual(list.messages.map((m) => m.ID), [sent.ID, first.ID]);
  const found = await session.searchMessages({ query: "subject:Second" });
  assert.deepEqual(found.messages.map((m) => m.ID), [sent.ID]);
});

step("read status", async () => {
  await session.setReadStatus({ IDs: [first.ID], Read: false });
  assert.equal((await session.searchMessages({ query: "is:unread" })).messages_count, 2);
  await session.setReadStatus({ Read: true });
  assert.equal((await session.searchMessages({ query: "is:unread" })).messages_count, 0);
});

step("an API key's message routes", async () => {
  const m = await keyed.getMessageSummary(KEY_MESSAGE);
  assert.equal(m.Subject, "for the key");
  assert.match(await keyed.getMessageSource(KEY_MESSAGE), /body of for the key/);
  await keyed.setReadStatus({ IDs: [KEY_MESSAGE], Read: false });
  await keyed.deleteMessages({ IDs: [KEY_MESSAGE] });
  await rejects(keyed.getMessageSummary(KEY_MESSAGE), 404);
  await rejects(keyed.getMessageSummary(first.ID), 404);
});

step("an API key's info, latest, read-all, delete by search and delete-all at B cover A's mailboxes", async () => {
  for (const subject of ["key one", "key two", "key three"]) {
    await smtp.sendMail({ from: "app@example.com", to: KEY_BOX, subject, text: `body of ${subject}` });
  }
  let info = await keyed.getInfo();
  assert.equal(info.Messages, 3);
  assert.equal(info.Unread, 3);
  assert.equal((await keyed.getMessageSummary()).Subject, "key three");
  assert.equal((await keyed.getInfo()).Unread, 2, "opening latest marks it read");
  await keyed.setReadStatus({ Read: true });
  assert.equal((await keyed.getInfo()).Unread, 0);
  await keyed.setReadStatus({ Read: false });
  assert.equal((await keyed.getInfo()).Unread, 3);
  await keyed.deleteMessagesBySearch({ query: 'subject:"key two"' });
  assert.deepEqual((await keyed.listMessages()).messages.map((m) => m.Subject), ["key three", "key one"]);
  await keyed.deleteMessages();
  info = await keyed.getInfo();
  assert.equal(info.Messages, 0);
  assert.equal((await keyed.listMessages()).total, 0);
  await rejects(keyed.getMessageSummary(), 404);
});

step("delete one, then every message of the token's mailbox", async () => {
  await session.deleteMessages({ IDs: [first.ID] });
  await rejects(session.getMessageSummary(first.ID), 404);
  assert.equal((await session.listMessages()).total, 1);
  await session.deleteMessages();
  assert.equal((await session.listMessages()).total, 0);
});

step("a wrong token is 401", async () => {
  const last = TOKEN.endsWith("A") ? "B" : "A";
  await rejects(client(TOKEN.slice(0, -1) + last).listMessages(), 401);
});

let passed = 0;
let failed = 0;
for (const [name, fn] of steps) {
  try {
    await fn();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`not ok - ${name}\n${e.stack ?? e}`);
    break; // later steps build on earlier ones
  }
}
smtp.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed === steps.length ? 0 : 1);
