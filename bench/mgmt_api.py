"""The management API's answer times with many queues: an in-process broker
(testing.InProcessBroker, management on a free port), N queues declared through the admin
facade, then the best of 5 for GET /api/overview, a page of 100 of /api/queues, all of
/api/queues, and /api/whoami (the floor: auth and one request), over one kept-alive
connection.  ``python bench/mgmt_api.py [N ...]`` (default 1000 10000 100000)."""
from __future__ import annotations

import base64
import http.client
import sys
import time

from amqpbroker.admin import Admin
from amqpbroker.testing import InProcessBroker

AUTH = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}


def main(sizes: list[int]) -> None:
    b = InProcessBroker({"management": {}}).start()
    try:
        port = int(b.management_url.rsplit(":", 1)[1].strip("/"))
        conn = http.client.HTTPConnection("127.0.0.1", port)

        def best_ms(path: str, reps: int = 5) -> float:
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                conn.request("GET", path, headers=AUTH)
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200, (path, resp.status)
                best = min(best, time.perf_counter() - t0)
            return best * 1000

        def declare(upto: int, start: int) -> None:
            admin = Admin(b.server.broker)
            for i in range(start, upto):
                admin.declare_queue("/", f"q{i:07d}", durable=False)

        done = 0
        print("queues    overview  page of 100  all queues  whoami   (ms, best of 5)")
        for n in sizes:
            b.call(declare, n, done)
            done = n
            print(f"{n:>7}  {best_ms('/api/overview'):>9.1f}  "
                  f"{best_ms('/api/queues?page=1&page_size=100'):>11.1f}  "
                  f"{best_ms('/api/queues', 2 if n > 10000 else 5):>10.1f}  "
                  f"{best_ms('/api/whoami'):>6.2f}")
    finally:
        b.stop()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000, 100000])
