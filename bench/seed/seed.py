#!/usr/bin/env python3
"""The seed system's architecture, reproduced for bench/compare.sh and
bench/fleet.sh (issue #16, P6 and the CI fleet): one async process, as the
seed's article runs it, serving

  * SMTP (aiosmtpd): handle_DATA -> deliver_raw_email(): active-mailbox
    lookup, RFC 2822 parse (from, subject, text, html, attachment count),
    asyncpg INSERT of the parsed fields plus the raw bytes into PostgreSQL
    (autocommit: the 250 follows the commit, so durability rests on the
    server's fsync=on / synchronous_commit=on), then Redis PUBLISH
    mailbox:{address} {"event": "new_message", "message_id": ...};
  * REST (FastAPI on uvicorn, same event loop): create a mailbox, list its
    messages, get one, delete the mailbox. The seed extracts no codes: its
    clients read the text and find the code themselves, and learn of new mail
    by polling the listing (or a WebSocket fed by Redis; the fleet polls).

Left out, each in the seed's favour: API-key / session checks (a hashed-key
SELECT per request), the plan and quota queries before the INSERT, and
SQLAlchemy's ORM layer over asyncpg (plain asyncpg queries here).

usage: seed.py --dsn DSN --redis URL [--smtp HOST:PORT] [--http HOST:PORT]
               [--domain bench.test] [--mailbox LOCAL ...] [--pool 15]
Prints "ready smtp HOST:PORT http HOST:PORT" when both listen; on SIGTERM
prints "count ADDRESS N" (rows stored) for every --mailbox, then exits.
"""
import argparse
import asyncio
import email
import email.policy
import json
import signal
import uuid

import asyncpg
import redis.asyncio as aioredis
import uvicorn
from aiosmtpd.smtp import SMTP
from fastapi import FastAPI, HTTPException, Response

SCHEMA = """
CREATE TABLE IF NOT EXISTS mailboxes (
    id BIGSERIAL PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS mailboxes_expiry ON mailboxes (expires_at, is_active);
CREATE TABLE IF NOT EXISTS messages (
    id UUID PRIMARY KEY,
    mailbox_id BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    from_address TEXT,
    subject TEXT,
    body_text TEXT,
    body_html TEXT,
    raw_email BYTEA NOT NULL,
    attachments INTEGER NOT NULL DEFAULT 0,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS messages_mailbox_received ON messages (mailbox_id, received_at);
"""


def parse_email(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text = html = None
    attachments = 0
    for part in msg.walk():
        if part.is_multipart():
            continue
        if part.get_content_disposition() == "attachment":
            attachments += 1
            continue
        kind = part.get_content_type()
        try:
            content = part.get_content()
        except Exception:  # noqa: BLE001 - a bad part keeps the rest
            continue
        if kind == "text/plain" and text is None:
            text = content
        elif kind == "text/html" and html is None:
            html = content
    return str(msg.get("from", "")), str(msg.get("subject", "")), text, html, attachments


class Seed:
    def __init__(self, pool, publisher, domain):
        self.pool = pool
        self.redis = publisher
        self.domain = domain

    async def deliver_raw_email(self, raw, address):
        async with self.pool.acquire() as db:
            mailbox_id = await db.fetchval(
                "SELECT id FROM mailboxes WHERE address = $1 AND is_active"
                " AND expires_at > now()",
                address,
            )
            if mailbox_id is None:
                return None
            sender, subject, text, html, attachments = parse_email(raw)
            message_id = uuid.uuid4()
            await db.execute(
                "INSERT INTO messages (id, mailbox_id, from_address, subject, body_text,"
                " body_html, raw_email, attachments) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                message_id, mailbox_id, sender, subject, text, html, raw, attachments,
            )
        await self.redis.publish(
            f"mailbox:{address}",
            json.dumps({"event": "new_message", "message_id": str(message_id)}),
        )
        return message_id

    # aiosmtpd handler hooks
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        for rcpt in envelope.rcpt_tos:
            if rcpt.lower().endswith("@" + self.domain):
                await self.deliver_raw_email(raw, rcpt.lower())
        return "250 Message accepted for delivery"

    async def create_mailbox(self, local_part, ttl_minutes):
        address = f"{local_part.lower()}@{self.domain}"
        row = await self.pool.fetchrow(
            "INSERT INTO mailboxes (address, expires_at) VALUES"
            " ($1, now() + make_interval(mins => $2)) ON CONFLICT (address) DO NOTHING"
            " RETURNING id",
            address, ttl_minutes,
        )
        return address if row else None


def api(seed):
    app = FastAPI()

    @app.post("/api/v1/mailboxes", status_code=201)
    async def create(body: dict):
        local = str(body.get("local_part") or uuid.uuid4().hex[:12])
        address = await seed.create_mailbox(local, int(body.get("ttl_minutes", 60)))
        if address is None:
            raise HTTPException(409, "address taken")
        return {"address": address}

    async def mailbox_id(address):
        found = await seed.pool.fetchval(
            "SELECT id FROM mailboxes WHERE address = $1 AND is_active", address
        )
        if found is None:
            raise HTTPException(404, "no such mailbox")
        return found

    @app.get("/api/v1/mailboxes/{address}/messages")
    async def listing(address: str, limit: int = 50):
        rows = await seed.pool.fetch(
            "SELECT id, from_address, subject, received_at FROM messages"
            " WHERE mailbox_id = $1 ORDER BY received_at LIMIT $2",
            await mailbox_id(address), limit,
        )
        return {"messages": [
            {"id": str(r["id"]), "from": r["from_address"], "subject": r["subject"],
             "received_at": r["received_at"].isoformat()} for r in rows
        ]}

    @app.get("/api/v1/mailboxes/{address}/messages/{message_id}")
    async def message(address: str, message_id: uuid.UUID):
        row = await seed.pool.fetchrow(
            "SELECT id, from_address, subject, body_text, body_html, received_at"
            " FROM messages WHERE id = $1 AND mailbox_id = $2",
            message_id, await mailbox_id(address),
        )
        if row is None:
            raise HTTPException(404, "no such message")
        return {"id": str(row["id"]), "from": row["from_address"], "subject": row["subject"],
                "text": row["body_text"], "html": row["body_html"],
                "received_at": row["received_at"].isoformat()}

    @app.delete("/api/v1/mailboxes/{address}", status_code=204)
    async def delete(address: str):
        done = await seed.pool.execute("DELETE FROM mailboxes WHERE address = $1", address)
        if done.endswith(" 0"):
            raise HTTPException(404, "no such mailbox")
        return Response(status_code=204)

    return app


def host_port(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dsn", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--smtp", default="127.0.0.1:0")
    p.add_argument("--http", default="127.0.0.1:0")
    p.add_argument("--domain", default="bench.test")
    p.add_argument("--mailbox", action="append", default=[])
    # The article's engine: pool_size=5 + max_overflow=10.
    p.add_argument("--pool", type=int, default=15)
    a = p.parse_args()

    pool = await asyncpg.create_pool(a.dsn, min_size=1, max_size=a.pool)
    async with pool.acquire() as db:
        await db.execute(SCHEMA)
    publisher = aioredis.Redis.from_url(a.redis, decode_responses=True)
    await publisher.ping()
    seed = Seed(pool, publisher, a.domain)
    for local in a.mailbox:
        await seed.create_mailbox(local, 1440)

    loop = asyncio.get_running_loop()
    host, port = host_port(a.smtp)
    smtp = await loop.create_server(
        lambda: SMTP(seed, data_size_limit=64 * 1024 * 1024, enable_SMTPUTF8=True),
        host=host, port=port,
    )
    smtp_addr = "%s:%d" % smtp.sockets[0].getsockname()[:2]
    host, port = host_port(a.http)
    http = uvicorn.Server(uvicorn.Config(api(seed), host=host, port=port,
                                         log_level="warning", access_log=False))
    http.install_signal_handlers = lambda: None
    serving = asyncio.create_task(http.serve())
    while not http.started:
        if serving.done():
            serving.result()
            raise SystemExit("uvicorn stopped before it started")
        await asyncio.sleep(0.05)
    http_addr = "%s:%d" % http.servers[0].sockets[0].getsockname()[:2]
    print(f"ready smtp {smtp_addr} http {http_addr}", flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    smtp.close()
    http.should_exit = True
    await serving
    for local in a.mailbox:
        address = f"{local.lower()}@{a.domain}"
        n = await pool.fetchval(
            "SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
            " WHERE b.address = $1", address)
        print(f"count {address} {n}", flush=True)
    await publisher.aclose()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
