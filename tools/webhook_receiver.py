"""A webhook receiver, to try the shop's webhooks on your own machine, and to read as an example.

    python tools/webhook_receiver.py --port 9000 --secret-file var/webhook_secret

It listens on 127.0.0.1 and, for each POST, does what any receiver of Standard Webhooks
(https://www.standardwebhooks.com) should do before trusting a delivery:

    1. the signature: "v1," + base64(HMAC-SHA256(secret bytes, id + "." + timestamp + "." + body)),
       computed here and compared in constant time with each signature of the header
    2. the timestamp: at most 5 minutes from now, so a recorded delivery cannot be replayed later
    3. the webhook-id: an event seen before is acknowledged and not acted on again (retries
       and a worker that died after sending may deliver one event more than once)

then prints one line and answers 204; a bad signature or timestamp gets 401. The secret
is read from --secret-file at each request, so that the file can be written after the
receiver starts (the README's walkthrough subscribes, and only then knows the secret).

It uses only the standard library, on purpose: the whole check is the few lines of
`verify`. (The shop's own tests check its deliveries with an independent package,
`standardwebhooks`.) Bodies are read up to 1 MiB; it answers on 127.0.0.1 only.
"""

import argparse
import base64
import hashlib
import hmac
import http.server
import json
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

TOLERANCE_SECONDS = 5 * 60
MAX_BODY_BYTES = 1024 * 1024
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not one


def verify(secret, headers, body, now=None):
    """None when the delivery is genuine and fresh, else why it is not.

    `headers` maps lower-case names to values; `body` is the raw bytes, exactly as received
    (parse the JSON only after this check: re-encoding it would change the bytes signed).
    """
    message_id, timestamp, signatures = (headers.get(name, "") for name in
                                         ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (message_id and timestamp.isdigit() and signatures):
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    if abs((now or time.time()) - int(timestamp)) > TOLERANCE_SECONDS:
        return "the timestamp is more than 5 minutes away"
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # Several signatures, space-separated, while the sender rotates its secret.
    if not any(hmac.compare_digest(expected, signature) for signature in signatures.split(" ")):
        return "no signature matches"
    return None


class Receiver(http.server.BaseHTTPRequestHandler):
    secret_file: Path
    seen: ClassVar[set] = set()  # the webhook-ids already acted on
    seen_lock = threading.Lock()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY_BYTES:
            self._answer(413, "body too large")
            return
        body = self.rfile.read(length)
        try:
            secret = self.secret_file.read_text().strip()
        except OSError:
            self._answer(503, f"no secret yet in {self.secret_file}")
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        problem = verify(secret, headers, body)
        if problem is not None:
            self._answer(401, f"refused: {problem}")
            return
        with self.seen_lock:
            repeat = headers["webhook-id"] in self.seen
            self.seen.add(headers["webhook-id"])
        event = json.loads(body)
        what = "again, already handled" if repeat else f"order {event['data']['id']} is {event['data']['status']}"
        self._answer(204, f"{headers['webhook-id']} {event['type']}: verified; {what}")

    def _answer(self, status, line):
        print(f"webhook receiver: {status} {line}", file=sys.stderr, flush=True)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass  # one line per delivery is printed by _answer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret-file", type=Path, required=True, help="a file holding the whsec_... secret")
    arguments = parser.parse_args(argv)
    Receiver.secret_file = arguments.secret_file
    server = http.server.ThreadingHTTPServer(("127.0.0.1", arguments.port), Receiver)
    print(f"webhook receiver: listening on http://127.0.0.1:{arguments.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
