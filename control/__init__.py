"""The control plane (`herald control`): membership and liveness of nodes, routers and control
replicas, leader election, crash cleanup, drain orders, connection rebalancing, the admin API
(CONTRACT §8) and the live ops dashboard.

view.py and rebalance.py are pure (time passed in); service.py does the engine I/O; app.py is the
HTTP surface; dashboard.py is the dashboard's live feed (the cluster channel and its tokens);
static/ holds the dashboard page."""
