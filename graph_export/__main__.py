import gc
import sys

from .cli import main

# Everything imported so far lives as long as the process: keep it out of every garbage collection,
# including the full one at exit, which would otherwise walk it all again (about 50 ms per run).
gc.freeze()
sys.exit(main())
