"""100 concurrent wait_for_message calls across 100 mailboxes, in one MCP
session: all are subscribed (first progress notification) before any mail is
sent; each wakes with exactly its own mail and none for another's. A wait past
the session's limit is a tool error; closing the session cancels the waits.

usage: many.py --transport http|stdio --url URL --smtp HOST:PORT [--binary PATH] [--n 100]
"""

import argparse
import random
import smtplib
import sys
from email.message import EmailMessage

import anyio

from client import check, session


async def run(args):
    n = args.n
    async with session(args.transport, args.url, args.binary) as s:
        addresses = []
        for i in range(n):
            r = await s.call_tool("create_mailbox", {"local_part": f"many-{i}"})
            check(not r.isError, f"create {i}: {r.content}")
            addresses.append(r.structuredContent["address"])

        listening = [anyio.Event() for _ in range(n)]
        results = [None] * n

        async def wait(i):
            async def on_progress(progress, total, message):
                listening[i].set()

            results[i] = await s.call_tool(
                "wait_for_message",
                {"address": addresses[i], "timeout_seconds": 120},
                progress_callback=on_progress,
            )

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(wait, i)
            with anyio.fail_after(60):
                for e in listening:
                    await e.wait()
            check(all(r is None for r in results), "no wait returned before the mail was sent")

            over = await s.call_tool("wait_for_message", {"address": addresses[0], "timeout_seconds": 1})
            check(over.isError and "waits running" in over.content[0].text,
                  f"a wait past max_waits_per_session is refused: {over.content}")

            order = list(range(n))
            random.shuffle(order)

            def send_all():
                host, port = args.smtp.rsplit(":", 1)
                with smtplib.SMTP(host, int(port), timeout=30) as c:
                    for i in order:
                        msg = EmailMessage()
                        msg["From"] = "load@app.example"
                        msg["To"] = addresses[i]
                        msg["Subject"] = f"for {addresses[i]}"
                        msg.set_content(f"mail number {i}, code {100000 + i}")
                        c.send_message(msg)

            await anyio.to_thread.run_sync(send_all)

        for i, r in enumerate(results):
            check(r is not None and not r.isError, f"wait {i}: {r and r.content}")
            got = r.structuredContent["messages"]
            check(len(got) == 1, f"wait {i} got {len(got)} messages")
            check(got[0]["subject"] == f"for {addresses[i]}", f"wait {i} woke for {got[0]['subject']!r}")
            check(got[0]["codes"] == [str(100000 + i)], f"wait {i} codes {got[0]['codes']}")

        # A wait left running when the session closes is cancelled with it
        # (the Rust side checks that no subscriber is left).
        started = anyio.Event()

        async def on_progress(progress, total, message):
            started.set()

        async def dangling():
            try:
                await s.call_tool("wait_for_message", {"address": addresses[0], "since": 1, "timeout_seconds": 300},
                                  progress_callback=on_progress)
            except Exception:
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(dangling)
            with anyio.fail_after(30):
                await started.wait()
            print("dangling wait subscribed", flush=True)
            tg.cancel_scope.cancel()
    print(f"ok: {n} concurrent waits over {args.transport}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--transport", required=True, choices=["http", "stdio"])
    p.add_argument("--url", required=True)
    p.add_argument("--smtp", required=True)
    p.add_argument("--binary")
    p.add_argument("--n", type=int, default=100)
    args = p.parse_args()
    anyio.run(run, args)


if __name__ == "__main__":
    sys.exit(main())
