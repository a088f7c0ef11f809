# Benchmark helper (BENCHMARKS.md, "The HPA query end to end"); not part of the test suite.
# Loopback TCP round trips paced at RATE/s (the server sleeps between requests, as the
# bridge's serving worker does at 500 req/s): the VM's floor for any request/response.
import socket, threading, time, sys, statistics
RATE = float(sys.argv[1]) if len(sys.argv) > 1 else 500
N = int(sys.argv[2]) if len(sys.argv) > 2 else 15000
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
def serve():
    c, _ = srv.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(64)
        if not d: return
        c.sendall(d)
import os
if os.fork() == 0:
    serve(); os._exit(0)
cl = socket.create_connection(("127.0.0.1", port)); cl.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
lat = []
interval = 1.0 / RATE
nxt = time.perf_counter()
for _ in range(N):
    nxt += interval
    t = time.perf_counter(); cl.sendall(b"x"); cl.recv(64); lat.append(time.perf_counter() - t)
    s = nxt - time.perf_counter()
    if s > 0: time.sleep(s)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6
print(f"pingpong rate={RATE} n={N} p50_us={q(.5):.0f} p90_us={q(.9):.0f} p99_us={q(.99):.0f} p999_us={q(.999):.0f} max_us={lat[-1]*1e6:.0f}")
