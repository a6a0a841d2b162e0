package fsnodes

// ACLAsks is how often the kernel asked for /M's access ACL.
func ACLAsks(r *Root) int64 { return r.aclAsks.Load() }
