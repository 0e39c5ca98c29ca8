#!/usr/bin/env bash
# bench/startup.sh - exec to first 200 on /v1/health (median of 20 runs) and idle RSS.
# Usage: bench/startup.sh [runs]
source "$(dirname "$0")/lib.sh"
RUNS=${1:-20}
cat > "$TMP/first200.py" <<'PY'
import socket, subprocess, sys, time
bin_, port, data = sys.argv[1], int(sys.argv[2]), sys.argv[3]
req = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
t0 = time.perf_counter()
p = subprocess.Popen([bin_, "run", "--set", f"http.listen=127.0.0.1:{port}", "--set", f"data.dir={data}",
                      "--set", "log.level=warn"], stderr=subprocess.DEVNULL)
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        s.sendall(req)
        if s.recv(64).startswith(b"HTTP/1.1 200"):
            break
    except OSError:
        time.sleep(0.0005)
        continue
    finally:
        try: s.close()
        except Exception: pass
elapsed = (time.perf_counter() - t0) * 1000
time.sleep(1.0)  # idle
rss_kb = 0
for line in open(f"/proc/{p.pid}/status"):
    if line.startswith("VmRSS:"):
        rss_kb = int(line.split()[1])
p.terminate(); p.wait(10)
print(f"{elapsed:.2f} {rss_kb}")
PY
results=()
for i in $(seq 1 "$RUNS"); do
  port=$(free_port)
  results+=("$(/usr/bin/python3 "$TMP/first200.py" "$BIN" "$port" "$TMP/data$i")")
done
printf '%s\n' "${results[@]}" | /usr/bin/python3 -c '
import statistics, sys
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
t = [r[0] for r in rows]; rss = [r[1] / 1024 for r in rows]
print(f"exec -> first 200 on /v1/health: median {statistics.median(t):.2f} ms over {len(t)} runs "
      f"(min {min(t):.2f}, max {max(t):.2f}); target <= 20 ms")
print(f"idle RSS after 1 s: median {statistics.median(rss):.1f} MB (max {max(rss):.1f}); target <= 8 MB")
'
