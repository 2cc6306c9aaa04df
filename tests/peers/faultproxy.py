#!/usr/bin/env python3
"""Tiny fault-injecting reverse proxy for moto (moto itself has NO error/throttle injection).

The one copy every kprov test uses (the AWS adapter's and the S3 state store's). It started as
a lab script; the parts added for kprov are marked "kprov addition":
  strip_headers  a rule's list of request header names removed before forwarding, to play an
            S3-compatible store that ignores conditional writes (If-None-Match, If-Match)
  skip      a rule lets its first `skip` matching requests through untouched, then fires; with
            "delay_ms" this stops exactly the Nth call (the kill -9 tests)
  mode "after_drop"  forward to moto, then close the socket without any answer (the mutation is
            applied, the client sees a dropped connection)
  counts    GET /__fault__/rules also returns {"counts": {"ec2:RunInstances": n, ...}, "total": n}
            for every request proxied (the benchmark's API call counts); DELETE clears them
  fired     each rule records how many times it fired
  mode "hang"  accept the request and never answer: forward nothing, keep the connection open and
            silent until the client gives up (closes it), or "hang_ms" (default 1 h) passes
  mode "after_hang"  forward to moto, then hang as above (the mutation is applied, its answer
            never comes)

  python faultproxy.py --listen 5056 --upstream http://127.0.0.1:5055
  point the SDK at http://127.0.0.1:5056

Control plane (JSON, on the proxy port):
  POST   /__fault__/rules   [{"service":"ec2","action":"RunInstances","status":503,
                              "code":"RequestLimitExceeded","times":2}]      -> replaces rules
  GET    /__fault__/rules   current rules (with remaining 'times') + hit counters
  DELETE /__fault__/rules   clear
Rule fields (all optional except status unless mode=drop):
  service   "ec2"|"s3"|"elasticloadbalancing"... (from the SigV4 credential scope)
  action    EC2/ELB query Action (RunInstances...) or S3 "<METHOD> <path-regex>" e.g. "PUT /kprov-state/.*"
  times     how many matching requests to hit (default: unlimited); prob: 0..1 probability
  delay_ms  sleep before handling
  mode      "error" (default: don't forward, return error)
            "after" (forward to moto, THEN return the error -> mutation applied but response lost)
            "drop"  (forward nothing, close the socket -> connection reset / dispatch failure)
"""
import argparse, select, socket, http.client, http.server, json, random, re, threading, time, urllib.parse

RULES, LOCK, HITS, COUNTS = [], threading.Lock(), {}, {}

def service_of(headers):
    m = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/aws4_request", headers.get("Authorization", ""))
    return m.group(1) if m else "?"

def action_of(method, path, body, svc):
    if svc in ("s3",):
        return f"{method} {urllib.parse.urlsplit(path).path}"
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    if "Action" not in q and body:
        q = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    return q.get("Action", ["?"])[0]

def error_body(svc, code, msg):
    if svc == "s3":
        return f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{msg}</Message><RequestId>fault</RequestId></Error>'
    if svc == "ec2":
        return f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code><Message>{msg}</Message></Error></Errors><RequestID>fault</RequestID></Response>'
    return f'<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{msg}</Message></Error><RequestId>fault</RequestId></ErrorResponse>'

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else ~40 ms/request (Nagle + delayed ACK)
    def log_message(self, *a): pass

    def _reply(self, status, body, ctype="application/xml", extra=None):
        b = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(b)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(b)

    def _hang(self, rule):  # kprov addition: never answer; return once the client gave up
        self.close_connection = True
        until = time.time() + rule.get("hang_ms", 3600000) / 1000
        while time.time() < until:
            try:
                r, _, _ = select.select([self.connection], [], [], 0.5)
                if r and not self.connection.recv(1, socket.MSG_PEEK):
                    return  # the client closed the connection
            except OSError:
                return

    def _control(self, body):
        global RULES
        with LOCK:
            if self.command == "POST":
                RULES = json.loads(body or b"[]")
            elif self.command == "DELETE":
                RULES = []; HITS.clear(); COUNTS.clear()
            self._reply(200, json.dumps({"rules": RULES, "hits": HITS, "counts": COUNTS, "total": sum(COUNTS.values())}), "application/json")

    def _handle(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.path.startswith("/__fault__/"):
            return self._control(body)
        svc = service_of(self.headers)
        act = action_of(self.command, self.path, body, svc)
        rule = None
        with LOCK:
            COUNTS[f"{svc}:{act}"] = COUNTS.get(f"{svc}:{act}", 0) + 1  # kprov addition
            for r in RULES:
                if r.get("service") not in (None, svc): continue
                a = r.get("action")
                if a and not (a == act or (svc == "s3" and re.fullmatch(a, act))): continue
                if r.get("times", 1) <= 0: continue
                if random.random() >= r.get("prob", 1.0): continue
                if r.get("skip", 0) > 0:  # kprov addition: let the first `skip` through
                    r["skip"] -= 1; break
                if "times" in r: r["times"] -= 1
                r["fired"] = r.get("fired", 0) + 1  # kprov addition
                HITS[f"{svc}:{act}"] = HITS.get(f"{svc}:{act}", 0) + 1
                rule = dict(r); break
        if rule and rule.get("delay_ms"):
            time.sleep(rule["delay_ms"] / 1000)
        if rule and rule.get("mode") == "drop":
            self.close_connection = True
            self.connection.shutdown(2); return
        if rule and rule.get("mode") == "hang":  # kprov addition
            return self._hang(rule)
        if not rule or rule.get("mode") in ("after", "after_drop", "after_hang") or not rule.get("status"):
            up = urllib.parse.urlsplit(ARGS.upstream)
            c = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
            c.connect(); c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            strip = {"connection", "keep-alive"} | {h.lower() for h in (rule or {}).get("strip_headers", [])}  # kprov addition
            hdrs = {k: v for k, v in self.headers.items() if k.lower() not in strip}
            c.request(self.command, self.path, body=body, headers=hdrs)
            resp = c.getresponse(); data = resp.read()
            if rule and rule.get("mode") == "after_drop":  # kprov addition
                self.close_connection = True
                self.connection.shutdown(2); return
            if rule and rule.get("mode") == "after_hang":  # kprov addition
                return self._hang(rule)
            if not rule or not rule.get("status"):
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD": self.wfile.write(data)
                return
        self._reply(rule["status"], error_body(svc, rule.get("code", "InternalError"), rule.get("message", "injected by faultproxy")))

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=int, default=5056)
    p.add_argument("--upstream", default="http://127.0.0.1:5055")
    ARGS = p.parse_args()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", ARGS.listen), H)
    print(f"faultproxy :{ARGS.listen} -> {ARGS.upstream}", flush=True)
    srv.serve_forever()
