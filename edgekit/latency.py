"""`python -m edgekit.latency JOB`: the benchmark child, under the name every edgekit install
answers to (`bench --remote` runs it on the device, whatever version is installed there). The
harness itself is edgekit.measure.latency."""

import sys

from edgekit.measure.latency import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
