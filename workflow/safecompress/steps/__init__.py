"""Pipeline steps, one module each: `python -m safecompress.steps.<step> --help`."""

import gc
import sys

# A step run as a program (`python -m`: sys.argv[0] is "-m" while Python locates the module)
# first imports torch, pandas and often scikit-learn: millions of objects that live as long as
# the job, which the cyclic garbage collector scans again and again and never frees (about
# 0.8 s of a 7 s training job). It is off during those imports; `cli.run` turns it back on.
COLLECT_AFTER_IMPORTS = sys.argv[:1] == ["-m"]
if COLLECT_AFTER_IMPORTS:
    gc.disable()
