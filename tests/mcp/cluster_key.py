"""MCP with an API key on a host that does not own the key's mailbox,
through the official MCP Python SDK: list_mailboxes shows it (gathered
from every host) and not another user's; list_messages, read_message and
wait_for_code run on the owner with the caller's key; another user's
mailbox is a tool error identical to a missing one; delete_mailbox
deletes it on the owner.

usage: cluster_key.py --url http://B --api-key KEY --address MINE --foreign THEIRS --missing NOBODY --code CODE
"""

import argparse
import sys

import anyio

from client import check, session


async def run(args):
    async with session("http", args.url, api_key=args.api_key) as s:
        mailboxes = await s.call_tool("list_mailboxes", {})
        check(not mailboxes.isError, f"list_mailboxes: {mailboxes.content}")
        addresses = [m["address"] for m in mailboxes.structuredContent["mailboxes"]]
        check(addresses == [args.address], f"only mine, kept by the owner: {addresses}")
        listed = await s.call_tool("list_messages", {"address": args.address})
        check(not listed.isError, f"list_messages: {listed.content}")
        messages = listed.structuredContent["messages"]
        check(len(messages) == 1, f"one message: {listed.structuredContent}")
        read = await s.call_tool("read_message", {"address": args.address, "id": messages[0]["id"]})
        check(not read.isError and args.code in read.structuredContent["text"], f"read_message: {read.content}")
        code = await s.call_tool("wait_for_code", {"address": args.address, "timeout_seconds": 5})
        check(code.structuredContent["code"] == args.code, f"wait_for_code: {code.structuredContent}")

        foreign = await s.call_tool("list_messages", {"address": args.foreign})
        missing = await s.call_tool("list_messages", {"address": args.missing})
        check(foreign.isError and missing.isError, f"tool errors: {foreign.content} {missing.content}")
        check(foreign.structuredContent == missing.structuredContent,
              f"foreign {foreign.structuredContent} == missing {missing.structuredContent}")
        check([c.text for c in foreign.content] == [c.text for c in missing.content], "same text")

        deleted = await s.call_tool("delete_mailbox", {"address": args.address})
        check(not deleted.isError and deleted.structuredContent["deleted"] is True, f"delete: {deleted.content}")
    print("ok: key across hosts", flush=True)


def main():
    p = argparse.ArgumentParser()
    for name in ["--url", "--api-key", "--address", "--foreign", "--missing", "--code"]:
        p.add_argument(name, required=True)
    anyio.run(run, p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
