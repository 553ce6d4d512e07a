#!/usr/bin/env python3
"""Comparison peer for bench/compare.sh: an aiosmtpd server that, like the seed
system's development server, writes each message to its own file and fsync()s
it before answering 250. Stores into DIR; prints "ready HOST:PORT" when
listening. Stop with SIGTERM/SIGINT.

usage: aiosmtpd_fsync.py DIR [HOST:PORT]
"""
import asyncio
import itertools
import os
import signal
import sys

from aiosmtpd.controller import Controller


class FsyncHandler:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(self.directory, "%d.eml" % next(self.counter))
        # Same blocking write + fsync on the event loop as a straightforward
        # development server does: durability before the 250.
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, envelope.original_content or envelope.content)
            os.fsync(fd)
        finally:
            os.close(fd)
        return "250 Message accepted for delivery"


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    directory = sys.argv[1]
    os.makedirs(directory, exist_ok=True)
    host, _, port = (sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:8025").rpartition(":")
    controller = Controller(
        FsyncHandler(directory),
        hostname=host,
        port=int(port),
        data_size_limit=64 * 1024 * 1024,
    )
    controller.start()
    print("ready %s:%s" % (host, port), flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()


if __name__ == "__main__":
    main()
