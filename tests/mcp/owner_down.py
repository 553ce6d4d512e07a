"""An MCP session on host B while the host that owns its mailbox (A) stops
and returns, through the official MCP Python SDK: create_mailbox (A owns
it), then, on the test's word (a line on stdin), list_messages must be a
tool error `unavailable` with `retry_after_seconds` (never an empty list or
not-found), and once A is back the same call works again in the same
session.

usage: owner_down.py --transport http --url http://127.0.0.1:PORT --smtp 127.0.0.1:PORT
"""

import argparse
import sys

import anyio

from client import check, session


async def line():
    return await anyio.to_thread.run_sync(sys.stdin.readline)


async def run(args):
    async with session(args.transport, args.url, args.binary) as s:
        created = await s.call_tool("create_mailbox", {})
        check(not created.isError, f"create_mailbox: {created.content}")
        address = created.structuredContent["address"]
        print(f"address {address}", flush=True)

        check((await line()).strip() == "owner down", "the test stopped the owner")
        down = await s.call_tool("list_messages", {"address": address})
        check(down.isError, f"list_messages while the owner is down is a tool error: {down.content}")
        check(down.structuredContent["error"] == "unavailable", f"unavailable: {down.structuredContent}")
        check(down.structuredContent.get("retry_after_seconds", 0) >= 1, f"retry after: {down.structuredContent}")
        print("saw unavailable", flush=True)

        check((await line()).strip() == "owner back", "the test restarted the owner")
        back = await s.call_tool("list_messages", {"address": address})
        check(not back.isError, f"list_messages once the owner is back: {back.content}")
        check(back.structuredContent["messages"] == [], f"empty mailbox: {back.structuredContent}")
    print("ok: owner down and back", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--transport", required=True, choices=["http", "stdio"])
    p.add_argument("--url", required=True)
    p.add_argument("--smtp", required=True)
    p.add_argument("--binary")
    args = p.parse_args()
    anyio.run(run, args)


if __name__ == "__main__":
    sys.exit(main())
