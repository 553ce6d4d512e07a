"""Shared by the MCP test scripts: open a session with the official MCP
Python SDK (PyPI `mcp` 1.x) over either transport, and send mail over real
SMTP with smtplib. Every script exits non-zero on the first failed check."""

import contextlib
import os
import smtplib
from email.message import EmailMessage

import httpx
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client

# Over HTTP/1.1 every call in flight holds a connection for its SSE
# response, plus one for the session's GET stream: 100 concurrent waits need
# more than httpx's default pool of 100 (past it, httpx.PoolTimeout after 30 s).
CONNECTIONS = 300


def _http_client(headers=None, timeout=None, auth=None):
    return httpx.AsyncClient(
        headers=headers,
        timeout=timeout,
        auth=auth,
        limits=httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS),
    )


@contextlib.asynccontextmanager
async def session(transport, base_url, binary=None, api_key=None):
    """An initialized ClientSession to the appliance at base_url.

    transport "http" talks to base_url/mcp; "stdio" launches `binary mcp`
    with UNCORREO_URL=base_url, the way an agent host would."""
    if transport == "http":
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        cm = streamablehttp_client(f"{base_url}/mcp", headers=headers, httpx_client_factory=_http_client)
    elif transport == "stdio":
        env = {"UNCORREO_URL": base_url, "PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn"}
        if api_key:
            env["UNCORREO_API_KEY"] = api_key
        cm = stdio_client(StdioServerParameters(command=binary, args=["mcp"], env=env))
    else:
        raise SystemExit(f"unknown transport {transport!r}")
    async with cm as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as s:
            await s.initialize()
            yield s


def send_mail(smtp, to, subject, text, html=None, sender="noreply@app.example"):
    """Deliver one message over SMTP; returns after the server's 250."""
    host, port = smtp.rsplit(":", 1)
    msg = EmailMessage()
    msg["From"] = f"App <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    with smtplib.SMTP(host, int(port), timeout=30) as c:
        c.send_message(msg)


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")
