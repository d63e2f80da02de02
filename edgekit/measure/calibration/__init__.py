"""`edgekit devices calibrate`: fit the per-layer latency model on a device you have (issue 25).

suite.py builds the fixed micro-benchmark suite (single layers of each kind over a range of shapes,
and a few small whole networks) as files in every format; costs.py is the cost model those files'
measured latencies fit; run.py measures the suite here or over SSH and writes the profile YAML.
"""
