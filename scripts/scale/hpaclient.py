# Benchmark helper (BENCHMARKS.md, "The HPA query end to end"); not part of the test suite.
# A second, independent paced client for the HPA query: one kept-alive TLS connection
# (Python's ssl + http.client), RATE requests/s for SECONDS, latency from request write to
# the whole body read. Usage: hpaclient.py URL TOKEN_FILE RATE SECONDS
import http.client, ssl, sys, time, urllib.parse
url, token_file, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
u = urllib.parse.urlsplit(url)
ctx = ssl._create_unverified_context()
conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx)
headers = {"Authorization": "Bearer " + open(token_file).read().strip(),
           "Accept": "application/vnd.kubernetes.protobuf, */*"}
path = u.path + ("?" + u.query if u.query else "")
lat, errors, size = [], 0, 0
interval = 1.0 / rate
end = time.perf_counter() + seconds
nxt = time.perf_counter()
while time.perf_counter() < end:
    nxt += interval
    t = time.perf_counter()
    conn.request("GET", path, headers=headers)
    r = conn.getresponse(); body = r.read()
    lat.append(time.perf_counter() - t)
    size = len(body)
    if r.status != 200: errors += 1
    s = nxt - time.perf_counter()
    if s > 0: time.sleep(s)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3
print(f"PYCLIENT n={len(lat)} rate={len(lat)/seconds:.1f} bytes={size} p50_ms={q(.5):.3f} p90_ms={q(.9):.3f} p99_ms={q(.99):.3f} p999_ms={q(.999):.3f} max_ms={lat[-1]*1e3:.3f} errors={errors}")
