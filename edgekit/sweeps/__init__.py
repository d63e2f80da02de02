"""`edgekit sweep`: many compress runs (recipes × grid values), measured on every device, Pareto fronts.

plan.py       recipes × --grid → cells, each keyed by a hash of everything that decides it
cell.py       one cell: a compress in a process of its own, its outcome as a record (cell.json)
local_pool.py the default engine: child interpreters, --jobs at a time
ray_engine.py --ray: each cell a Ray task; model and data through the object store
measure.py    after the cells: host latency (one at a time), device estimates, --remote
pareto.py     per device: the front and the pick
render.py     sweep.md and sweep.html
run.py        the driver: check → plan → run what is missing → measure → write

(Not named `sweep`: that is the API function `edgekit.sweep`, and importing a submodule of the
same name would rebind it.)
"""
