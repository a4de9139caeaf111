#!/usr/bin/env python3
"""A small Chrome DevTools Protocol driver for the browser tests.

Launches headless Chromium (Debian's /usr/bin/chromium) with a temporary
profile, talking CDP over a pipe (--remote-debugging-pipe: no debugging
port is opened), with every host but loopback unreachable (a dead proxy and
a resolver that resolves nothing). Python standard library only.

Commands arrive on stdin, one JSON object per line; each gets one JSON line
on stdout: {"ok": true, "value": ..., "ms": N} or {"ok": false, "error": "..."}.

  {"op": "open", "url": URL}                  navigate, wait for the load event
  {"op": "eval", "js": EXPR}                  evaluate (promises awaited), value returned
  {"op": "wait", "js": EXPR, "timeout_s": S}  poll EXPR until truthy; value returned
  {"op": "screenshot", "path": FILE}          save a PNG of the viewport
  {"op": "report"}                            console errors, exceptions, requests so far
  {"op": "close"}                             quit the browser (also at end of input)
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

CHROMIUM = os.environ.get("TOIL_TEST_CHROMIUM", "/usr/bin/chromium")


class Cdp:
    """One browser, one page, CDP over fds 3 (to the browser) and 4 (from it)."""

    def __init__(self, width=1280, height=900):
        if not os.path.exists(CHROMIUM):
            raise RuntimeError(
                f"{CHROMIUM} is missing: install Debian's chromium "
                "(scripts/setup-test-env.sh does) or set TOIL_TEST_CHROMIUM"
            )
        self.profile = tempfile.mkdtemp(prefix="toil-chromium-")
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        # Out of the way of 3 and 4 before they are put there in the child.
        hi = [fcntl_dup(fd) for fd in (to_r, from_w)]

        def child_fds():
            os.dup2(hi[0], 3)
            os.dup2(hi[1], 4)

        args = [
            CHROMIUM,
            "--headless",
            "--remote-debugging-pipe",
            f"--user-data-dir={self.profile}",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--mute-audio",
            # Nothing beyond loopback: loopback bypasses the proxy, the
            # rest goes to a closed port; names other than localhost do
            # not resolve.
            "--proxy-server=http://127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1 , EXCLUDE [::1]",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=child_fds,
        )
        for fd in (to_r, from_w, *hi):
            os.close(fd)
        self.out = os.fdopen(to_w, "wb", buffering=0)
        self.inp = os.fdopen(from_r, "rb", buffering=0)
        self.next_id = 0
        self.replies = {}
        self.cond = threading.Condition()
        self.console_errors = []
        self.exceptions = []
        self.requests = []
        self.loaded = 0
        self.closed = False
        threading.Thread(target=self._reader, daemon=True).start()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call(
            "Target.attachToTarget", {"targetId": target, "flatten": True}
        )["sessionId"]
        for domain in ("Runtime", "Page", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def _reader(self):
        buf = b""
        while True:
            chunk = self.inp.read(65536)
            if not chunk:
                with self.cond:
                    self.closed = True
                    self.cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                self._dispatch(json.loads(msg))

    def _dispatch(self, m):
        with self.cond:
            if "id" in m:
                self.replies[m["id"]] = m
            else:
                self._event(m.get("method", ""), m.get("params", {}))
            self.cond.notify_all()

    def _event(self, method, p):
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.console_errors.append(text)
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            desc = d.get("exception", {}).get("description") or d.get("text", "")
            self.exceptions.append(f"{desc} at {d.get('url', '')}:{d.get('lineNumber', '')}")
        elif method == "Log.entryAdded":
            e = p.get("entry", {})
            if e.get("level") == "error":
                self.console_errors.append(f"{e.get('source')}: {e.get('text')} {e.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            self.requests.append(p.get("request", {}).get("url", ""))
        elif method == "Page.loadEventFired":
            self.loaded += 1

    def call(self, method, params=None, session=False, timeout=60):
        with self.cond:
            self.next_id += 1
            i = self.next_id
        msg = {"id": i, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        self.out.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self.cond:
            while i not in self.replies:
                left = deadline - time.monotonic()
                if self.closed:
                    raise RuntimeError(f"the browser exited during {method}")
                if left <= 0:
                    raise RuntimeError(f"no answer to {method} within {timeout} s")
                self.cond.wait(left)
            r = self.replies.pop(i)
        if "error" in r:
            raise RuntimeError(f"{method}: {r['error'].get('message')}")
        return r.get("result", {})

    def open(self, url, timeout=60):
        with self.cond:
            before = self.loaded
        r = self.call("Page.navigate", {"url": url}, session=True)
        if r.get("errorText"):
            raise RuntimeError(f"opening {url}: {r['errorText']}")
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.loaded == before:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{url} did not finish loading within {timeout} s")
                self.cond.wait(left)

    def eval(self, js):
        r = self.call(
            "Runtime.evaluate",
            {"expression": js, "returnByValue": True, "awaitPromise": True},
            session=True,
        )
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            desc = d.get("exception", {}).get("description") or d.get("text", "")
            raise RuntimeError(f"evaluating {js!r}: {desc}")
        return r.get("result", {}).get("value")

    def wait(self, js, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = self.eval(js)
            if last:
                return last
            if time.monotonic() >= deadline:
                raise RuntimeError(f"waited {timeout} s for {js!r}; last value {last!r}")
            time.sleep(0.05)

    def screenshot(self, path):
        r = self.call("Page.captureScreenshot", {"format": "png"}, session=True)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))
        return os.path.getsize(path)

    def report(self):
        with self.cond:
            off = [u for u in self.requests if not loopback(u)]
            return {
                "console_errors": list(self.console_errors),
                "exceptions": list(self.exceptions),
                "requests": len(self.requests),
                "off_loopback_requests": off,
            }

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def fcntl_dup(fd):
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD, 10)


def loopback(url):
    u = urllib.parse.urlsplit(url)
    if u.scheme in ("data", "about", "blob", "chrome", "devtools", "file"):
        return True
    return (u.hostname or "") in ("127.0.0.1", "localhost", "::1")


def main():
    try:
        cdp = Cdp()
    except Exception as e:
        print(json.dumps({"ok": False, "error": f"starting the browser: {e}"}), flush=True)
        return 1
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            op = cmd.get("op")
            t0 = time.monotonic()
            try:
                if op == "open":
                    value = cdp.open(cmd["url"], cmd.get("timeout_s", 60))
                elif op == "eval":
                    value = cdp.eval(cmd["js"])
                elif op == "wait":
                    value = cdp.wait(cmd["js"], cmd.get("timeout_s", 30))
                elif op == "screenshot":
                    value = cdp.screenshot(cmd["path"])
                elif op == "report":
                    value = cdp.report()
                elif op == "close":
                    break
                else:
                    raise RuntimeError(f"unknown op {op!r}")
                reply = {"ok": True, "value": value}
            except Exception as e:
                reply = {"ok": False, "error": str(e)}
            reply["ms"] = round((time.monotonic() - t0) * 1000, 1)
            print(json.dumps(reply), flush=True)
    finally:
        cdp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
