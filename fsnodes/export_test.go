package fsnodes

// ACLAsks is how often the kernel asked for /M's access ACL.
func ACLAsks(m *Mounted) int64 { return m.root.aclAsks.Load() }
