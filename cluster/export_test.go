package cluster

// crash simulates the death of the node (SIGKILL, or a pause that never
// ends): the manager and the watchers stop, nothing is deleted, nobody is
// told. The keys stay in the buckets until other nodes see them expire.
func (l *Leases) crash() { l.halt() }
