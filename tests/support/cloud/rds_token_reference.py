"""The reference for RDS IAM auth tokens: botocore's own `generate_db_auth_token`.

  make   KEY_ID SECRET SESSION_TOKEN|- REGION HOST PORT USER UNIX_TIME
         prints the token botocore makes at that (pinned) time.
  verify KEY_ID SECRET REGION HOST PORT
         a PAM checker (pam_exec.so expose_authtok): reads the password from stdin and exits
         0 only when it is a token for PAM_USER@HOST:PORT that botocore, signing again at the
         token's own X-Amz-Date, produces byte for byte, and that has not expired.
"""
import datetime
import sys
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import botocore.auth
import botocore.session


def make(key_id, secret, token, region, host, port, user, when):
    session = botocore.session.get_session()
    session.set_credentials(key_id, secret, token)
    client = session.create_client("rds", region_name=region)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when):
        return client.generate_db_auth_token(host, int(port), user, Region=region)


def main():
    if sys.argv[1] == "make":
        key_id, secret, token, region, host, port, user, t = sys.argv[2:10]
        when = datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc).replace(tzinfo=None)
        print(make(key_id, secret, None if token == "-" else token, region, host, port, user, when))
        return 0
    if sys.argv[1] == "verify":
        import os

        key_id, secret, region, host, port = sys.argv[2:7]
        user = os.environ.get("PAM_USER", "")
        presented = sys.stdin.read().rstrip("\0\n")
        log = lambda m: print(f"rds_token_reference verify {user}: {m}", file=sys.stderr)
        try:
            q = parse_qs(urlsplit("https://" + presented).query)
            stamp = q["X-Amz-Date"][0]
            session_token = q.get("X-Amz-Security-Token", [None])[0]
        except (KeyError, ValueError) as e:
            log(f"not a presigned URL ({e})")
            return 1
        when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
        expected = make(key_id, secret, session_token, region, host, port, user, when)
        if presented != expected:
            log("signature mismatch")
            return 1
        age = datetime.datetime.utcnow() - when
        if age > datetime.timedelta(seconds=900) or age < datetime.timedelta(seconds=-300):
            log(f"expired or from the future ({age})")
            return 1
        log(f"valid token (X-Amz-Date {stamp})")
        return 0
    return 2


sys.exit(main())
