#!/usr/bin/env python3
"""Peak memory of the appliance under many concurrent large SMTP messages.

Starts the release binary on a fresh data directory with
`[memory] in_flight_bytes` = BUDGET_MIB, opens SESSIONS concurrent SMTP
sessions (Python smtplib, one thread each) that each send one SIZE_MIB
message, retrying after a 452 until stored, and prints the server's peak
resident memory (VmHWM) against its idle RSS and the budget.

    python3 bench/memory_sessions.py [SESSIONS] [SIZE_MIB] [BUDGET_MIB]

Defaults: 1000 sessions x 10 MiB against a 1024 MiB budget.
"""

import os
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.environ.get("UNCORREO_BIN", os.path.join(ROOT, "target/release/uncorreo"))


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main():
    sessions = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    size_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    budget_mib = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    data = tempfile.mkdtemp(prefix="uncorreo-memory-")
    env = dict(os.environ)
    env.update({
        "UNCORREO__ENGINE__DATA_DIR": os.path.join(data, "data"),
        "UNCORREO__SMTP__LISTEN": "127.0.0.1:0",
        "UNCORREO__HTTP__LISTEN": "127.0.0.1:0",
        "UNCORREO__ENGINE__MIN_FREE_BYTES": "0",
        "UNCORREO__MEMORY__IN_FLIGHT_BYTES": str(budget_mib << 20),
        "UNCORREO__SMTP__MAX_CONNECTIONS": str(sessions + 100),
        "UNCORREO__SMTP__MAX_CONNECTIONS_PER_IP": str(sessions + 100),
        "UNCORREO__PLANS__ANONYMOUS__MAX_MESSAGES_PER_MAILBOX": str(sessions * 2),
        "RUST_LOG": "warn",
    })
    server = subprocess.Popen([BINARY, "serve"], env=env, stdout=subprocess.PIPE, text=True)
    smtp = http = None
    while smtp is None or http is None:
        line = server.stdout.readline()
        if not line:
            sys.exit("server exited before listening")
        if line.startswith("smtp "):
            smtp = line.split()[1]
        elif line.startswith("http "):
            http = line.split()[1]
    threading.Thread(target=server.stdout.read, daemon=True).start()
    import json
    import urllib.request
    req = urllib.request.Request(f"http://{http}/api/v1/mailboxes", data=b'{"local_part":"memory"}',
                                 headers={"content-type": "application/json"}, method="POST")
    address = json.load(urllib.request.urlopen(req))["address"]
    host, port = smtp.rsplit(":", 1)
    time.sleep(1)
    idle = status_kib(server.pid, "VmRSS")
    body = b"Subject: memory\r\n\r\n" + (b"x" * 998 + b"\r\n") * ((size_mib << 20) // 1000)
    counts = {"stored": 0, "452": 0, "other": 0}
    lock = threading.Lock()
    start = threading.Barrier(sessions)

    def send():
        start.wait()
        while True:
            try:
                with smtplib.SMTP(host, int(port), timeout=600) as c:
                    c.sendmail("load@example.com", [address], body)
                with lock:
                    counts["stored"] += 1
                return
            except smtplib.SMTPResponseException as e:
                with lock:
                    counts["452" if e.smtp_code == 452 else "other"] += 1
                if e.smtp_code != 452:
                    return
                time.sleep(0.2)
            except (smtplib.SMTPException, OSError):
                with lock:
                    counts["other"] += 1
                return

    t0 = time.time()
    threads = [threading.Thread(target=send) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - t0
    peak = status_kib(server.pid, "VmHWM")
    server.terminate()
    server.wait()
    subprocess.run(["rm", "-rf", data])
    print(f"{sessions} sessions x {size_mib} MiB, budget {budget_mib} MiB: "
          f"{counts['stored']} stored, {counts['452']} answers 452 (retried), {counts['other']} other, "
          f"in {took:.1f} s")
    print(f"server RSS idle {idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB "
          f"(peak - idle = {(peak - idle) / 1024:.0f} MiB; budget {budget_mib} MiB)")
    sys.exit(0 if counts["stored"] == sessions and counts["other"] == 0 else 1)


if __name__ == "__main__":
    main()
