"""``python -m graph_export``: the CLI's process. Process-wide settings live here, never in the library,
which also runs inside the Functions worker beside the host's own threads."""

import gc
import sys

from .cli import main

#: Seconds a thread may hold the GIL while another waits for it (CPython's default is 0.005). The
#: thread that sends the next Graph request wakes from I/O while others parse and encode; with the
#: default it can wait up to 5 ms for the GIL on every page (about 7 % at 300,000 users and 0 ms).
SWITCH_INTERVAL_S = 0.0005

sys.setswitchinterval(SWITCH_INTERVAL_S)
# Everything imported so far lives as long as the process: keep it out of every garbage collection,
# including the full one at exit, which would otherwise walk it all again (about 50 ms per run).
gc.freeze()
sys.exit(main())
