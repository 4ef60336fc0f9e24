"""The benchmark: a load generator and its workloads (L, W1 to W4), run against a private stack on loopback.

L is the models' own limit in one process; W1 and W2 closed-loop clients of one-record jobs (interactive,
and quiet); W3 one bulk CSV job; W4 a backlog of one-record jobs built up, then drained.
"""
