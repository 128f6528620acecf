"""A signature-checking front for moto's S3, for presigned (query-string SigV4) requests.

moto verifies header-signed requests only (a presigned request with auth on makes it fail
with KeyError 'HTTP_AUTHORIZATION', HTTP 500). This front recomputes every presigned
request's signature with botocore's own S3 query signer (AWS's SDK code, not ours), checks the
key id, the expiry and the signature, answers S3-style XML errors (InvalidAccessKeyId,
SignatureDoesNotMatch, AccessDenied for expired or unsigned requests), and forwards good
requests to moto.

usage: python s3_presign_check.py LISTEN_PORT MOTO_PORT KEY_ID SECRET
"""
import http.client
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

LISTEN, MOTO, KEY_ID, SECRET = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]


def s3_error(code, message):
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>check-1</RequestId></Error>"
    ).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("s3-check: " + (fmt % args) + "\n")

    def reply(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def check(self):
        parts = urlsplit(self.path)
        q = dict(parse_qsl(parts.query, keep_blank_values=True))
        sig = q.get("X-Amz-Signature")
        if not sig:
            return 403, "AccessDenied", "only presigned requests are accepted here"
        cred = q.get("X-Amz-Credential", "").split("/")
        if len(cred) != 5 or cred[0] != KEY_ID:
            return 403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
        stamp = q.get("X-Amz-Date", "")
        signed = time.mktime(time.strptime(stamp, "%Y%m%dT%H%M%SZ")) - time.timezone
        if time.time() > signed + int(q.get("X-Amz-Expires", "0")):
            return 403, "AccessDenied", "Request has expired"
        unsigned_query = "&".join(
            p for p in parts.query.split("&") if not p.startswith("X-Amz-Signature=")
        )
        names = q.get("X-Amz-SignedHeaders", "host").split(";")
        headers = {n: self.headers.get(n, "") for n in names}
        url = f"http://{self.headers.get('host')}{parts.path}?{unsigned_query}"
        req = AWSRequest(method=self.command, url=url, headers=headers)
        req.context["timestamp"] = stamp
        auth = S3SigV4QueryAuth(Credentials(KEY_ID, SECRET), "s3", cred[2], expires=int(q["X-Amz-Expires"]))
        canonical = auth.canonical_request(req)
        want = auth.signature(auth.string_to_sign(req, canonical), req)
        if want != sig:
            return 403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method."
        return None

    def handle_any(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        bad = self.check()
        if bad:
            status, code, message = bad
            self.log_message("rejected %s %s: %s", self.command, urlsplit(self.path).path, code)
            return self.reply(status, s3_error(code, message), [("Content-Type", "application/xml")])
        try:
            c = http.client.HTTPConnection("127.0.0.1", MOTO, timeout=10)
            fwd = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            c.request(self.command, self.path, body=body, headers=fwd)
            r = c.getresponse()
            data = r.read()
        except OSError as e:
            # moto is down: what an unreachable store looks like through a load balancer.
            return self.reply(503, s3_error("ServiceUnavailable", f"backend down: {e}"))
        keep = [(k, v) for k, v in r.getheaders() if k.lower() in ("content-type", "etag")]
        self.reply(r.status, data, keep)

    do_PUT = do_GET = do_HEAD = do_POST = do_DELETE = handle_any


ThreadingHTTPServer(("127.0.0.1", LISTEN), Handler).serve_forever()
