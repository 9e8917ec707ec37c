"""The `az` on the tests' PATH: sends one call (arguments, GRAPH_EXPORT_* and FAKE_AZ_* variables, working
directory, and stdin when an argument is /dev/stdin or @-) to the fake az server (fake_az.py --serve) and
replays its answer: stdout, stderr, exit code. Standard library only, started with `python -I -S` (no site
packages): it is started once per az call.
"""

import json
import os
import socket
import sys

argv = sys.argv[1:]
request = {
    "argv": argv,
    "env": {k: v for k, v in os.environ.items() if k.startswith(("GRAPH_EXPORT_", "FAKE_AZ_"))},
    "cwd": os.getcwd(),
    # Read before connecting: in `a | az ... --file /dev/stdin` the server answers `a` first.
    "stdin": sys.stdin.read() if "/dev/stdin" in argv or "@-" in argv else None,
}
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
    connection.connect(os.environ["FAKE_AZ_SOCKET"])
    connection.sendall(json.dumps(request).encode())
    connection.shutdown(socket.SHUT_WR)
    reply = json.loads(b"".join(iter(lambda: connection.recv(1 << 16), b"")))
sys.stdout.write(reply["out"])
sys.stderr.write(reply["err"])
sys.exit(reply["rc"])
