"""Latency from SMTP `250` to the `wait_for_message` result at an MCP
client (the official Python SDK), over N sequential waits.

Each round: start wait_for_message on the mailbox, wait for its first
progress notification (it is subscribed), send one 4 KiB message with
smtplib on a kept-open connection, and take both arrival times with one
monotonic clock: when smtplib has read the `250` after DATA, and when the
tool result arrives. The engine publishes just before it acks, so the result
may arrive first; such rounds count as 0 (as in the WebSocket benchmark).

The anonymous plan allows 60 requests a minute; run the appliance with
UNCORREO__PLANS__ANONYMOUS__REQUESTS_PER_MINUTE and
UNCORREO__LIMITS__IP_REQUESTS_PER_MINUTE raised (see BENCHMARKS.md), or pass
--api-key.

usage: python3 bench/mcp_latency.py --url http://127.0.0.1:8080 --smtp 127.0.0.1:2525 [--transport http|stdio] [--binary target/release/uncorreo] [--n 1000]
"""

import argparse
import os
import smtplib
import sys
import time
from email.message import EmailMessage

import anyio

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "mcp"))
from client import check, session  # noqa: E402


def pct(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))]


async def run(args):
    host, port = args.smtp.rsplit(":", 1)
    smtp = smtplib.SMTP(host, int(port), timeout=30)
    smtp.ehlo("bench.test")
    body = ("x" * 75 + "\n") * 54  # ≈ 4 KiB
    latencies = []
    async with session(args.transport, args.url, args.binary, args.api_key) as s:
        async def fresh_mailbox():
            r = await s.call_tool("create_mailbox", {})
            check(not r.isError, f"create_mailbox: {r.content}")
            return r.structuredContent["address"], r.structuredContent["max_messages"]

        # A mailbox holds at most its plan's max_messages: move to a new one
        # before it is full (the next delivery would get 452 4.2.2).
        address, room = await fresh_mailbox()
        since = 0
        for i in range(args.n):
            if since >= room:
                await s.call_tool("delete_mailbox", {"address": address})
                address, room = await fresh_mailbox()
                since = 0
            listening = anyio.Event()
            done = {}

            async def on_progress(progress, total, message):
                listening.set()

            async def wait():
                result = await s.call_tool(
                    "wait_for_message",
                    {"address": address, "since": since, "timeout_seconds": 30},
                    progress_callback=on_progress,
                )
                done["at"] = time.perf_counter()
                done["result"] = result

            def send():
                msg = EmailMessage()
                msg["From"] = "bench@app.example"
                msg["To"] = address
                msg["Subject"] = f"round {i} code {100000 + i}"
                msg.set_content(body)
                smtp.send_message(msg)
                return time.perf_counter()

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await listening.wait()
                acked = await anyio.to_thread.run_sync(send)
            result = done["result"]
            check(not result.isError and result.structuredContent["messages"], f"round {i}: {result.content}")
            since = result.structuredContent["next_since"]
            latencies.append(max(0.0, done["at"] - acked))
        await s.call_tool("delete_mailbox", {"address": address})
    smtp.quit()
    v = sorted(latencies)
    ms = lambda x: f"{x * 1000:.2f} ms"  # noqa: E731
    print(f"{args.transport}: {len(v)} waits; SMTP 250 -> wait_for_message result: "
          f"p50 {ms(pct(v, 50))}, p90 {ms(pct(v, 90))}, p99 {ms(pct(v, 99))}, max {ms(v[-1])}; "
          f"{sum(1 for x in latencies if x == 0.0)} results arrived before the 250")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--smtp", required=True)
    p.add_argument("--transport", default="http", choices=["http", "stdio"])
    p.add_argument("--binary")
    p.add_argument("--api-key")
    p.add_argument("--n", type=int, default=1000)
    anyio.run(run, p.parse_args())


if __name__ == "__main__":
    main()
