"""The control plane (membership, drain orchestration, limits, rebalancing, admin API, ops
dashboard). Its work is tracked as its own issue; nothing is served from here yet."""
