"""Several hosts on one machine: network namespaces joined by veth links (see net.py), a data
host with its own PostgreSQL and Redis, an API host and two worker hosts (cluster.py), a
fault-injecting TCP proxy (proxy.py), and the failure scenarios (scenarios.py) that `make hosts`
runs at full size and `make test` at a short size (test_hosts.py)."""
