"""The router: owns partitions (rendezvous hashing + leases), reads their logs through a consumer
group, keeps the subscription registry in log order, and forwards batches to node inboxes."""
