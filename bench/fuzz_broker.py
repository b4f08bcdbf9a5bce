"""Our broker as a process for the fuzz tools (bench/fuzz.py's campaign, its --replay
against our broker): started on a free port with a SQLite store in a temporary directory,
restarted on the same port and data if it exits, stopped and cleaned up; the distinct
tracebacks in its log; the reports the tools write (JSON and text)."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time


def write_report(out: str, stem: str, data, text: str) -> None:
    """``out``/``stem``.json and .txt, and the text on stdout."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(data, f, indent=1)
    with open(os.path.join(out, f"{stem}.txt"), "w") as f:
        f.write(text)
    print(text)


class BrokerProcess:
    """Our broker, restarted on the same data directory and port if it exits."""

    def __init__(self, out: str):
        os.makedirs(out, exist_ok=True)
        self.data = tempfile.mkdtemp(prefix="fuzz-data-")
        self.log_path = os.path.join(out, "broker.log")
        self.log = open(self.log_path, "wb")
        self.port = 0
        self.exits: list[dict] = []
        self.proc = None

    def start(self) -> None:
        self.log.flush()
        offset = os.path.getsize(self.log_path)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "amqpbroker", "serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--management-port", "off", "--prometheus-port", "off", "--data-dir", self.data,
             "--log-level", "info"],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        pattern = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                found = pattern.findall(f.read())
            if found:
                self.port = int(found[-1])
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"broker exited at start, see {self.log_path}")
            time.sleep(0.05)
        raise SystemExit("broker did not start")

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.2)
            if self.proc.poll() is not None and not stop.is_set():
                self.exits.append({"returncode": self.proc.returncode, "at": time.time()})
                print(f"broker exited ({self.proc.returncode}); restarting", flush=True)
                await asyncio.to_thread(self.start)

    def target(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.data, ignore_errors=True)


def traceback_sites(log_path: str) -> list[dict]:
    """Distinct tracebacks in the broker's log: (innermost amqpbroker frame, exception) of
    the last traceback of each chain ("During handling of the above exception ...")."""
    sites: dict[tuple, dict] = {}
    lines = open(log_path, "rb").read().decode("utf-8", "replace").splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("Traceback (most recent call last):"):
            i += 1
            continue
        heading = lines[i - 1] if i else ""
        while True:   # one chain
            frames, j = [], i + 1
            while j < len(lines) and lines[j].startswith("  "):
                m = re.match(r'\s+File "(.+)", line (\d+), in (\S+)', lines[j])
                if m:
                    frames.append(m.groups())
                j += 1
            exc = lines[j] if j < len(lines) else "?"
            k = j + 1
            while k < len(lines) and not lines[k].strip():
                k += 1
            if k < len(lines) and lines[k].startswith(("During handling", "The above")):
                i = k + 2 if k + 2 < len(lines) else k + 1
                while i < len(lines) and not lines[i].startswith("Traceback"):
                    i += 1
                if i < len(lines):
                    continue
            break
        ours = [f for f in frames if "amqpbroker" in f[0]] or frames or [("?", "0", "?")]
        path, line, func = ours[-1]
        key = (os.path.basename(path), line, func, exc.split(":")[0])
        rec = sites.setdefault(key, {"site": f"{os.path.basename(path)}:{line} {func}",
                                     "exception": exc[:300], "count": 0,
                                     "logged": re.sub(r"^\S+ \S+ ", "", heading)[:200]})
        rec["count"] += 1
        i = j + 1
    return sorted(sites.values(), key=lambda r: -r["count"])
