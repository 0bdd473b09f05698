import os
import sys
from pathlib import Path

# The package lives in workflow/, as in the Snakemake workflow template.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
